/* Compiled kernels of the curation hot paths, each with a Python reference it is tested against:
 *   - member()/rows(): wat.read_wat's row builder. After the gzip inflate (ISA-L) the Python reader spent
 *     ~2x zcat's time in orjson (a dict per link) and in per-link Python (path filter, strip, URL
 *     shortcuts, list appends); see bench/README.md. This validates the whole payload as strict JSON in
 *     one pass, decodes only the strings the rows need, and appends the rows itself.
 *   - ids(): pool.pair_ids / pool.image_uuid (blake2b-64, sha224) without hashlib's per-call overhead.
 *   - token_table()/token_match(): matching.Matcher's token-join engine as one hash table.
 *
 * Exactness contract: rows() either appends exactly the rows and counts that wat.rows_from_wat_json
 * gives for the orjson/json-parsed document, or returns None having appended nothing, and the
 * caller runs the Python path. It returns None for anything outside the common shape: invalid or
 * unusual JSON (invalid UTF-8, lone surrogate escapes, control characters, nesting > 256, a
 * trailing value), tracked keys written with escapes or repeated, tracked nodes of an unexpected
 * type, non-string paths or image urls. URL shortcuts mirror pool.UrlResolver.resolve line by
 * line; every src they do not cover is passed to that method itself. metaclip_assets_tests/
 * _native/test_kernels.py compares both paths on generated, real and randomly damaged records.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* memmem */
#include <Python.h>
#include <stdlib.h>
#include <stdint.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <string.h>

#define MAX_DEPTH 256

/* ---- growable byte arena for decoded strings ---------------------------------------------- */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Arena;

static int arena_reserve(Arena *a, Py_ssize_t extra) {
    if (a->len + extra <= a->cap) return 0;
    Py_ssize_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + extra) cap *= 2;
    char *nb = (char *)realloc(a->buf, (size_t)cap);
    if (!nb) return -1;
    a->buf = nb;
    a->cap = cap;
    return 0;
}

/* A decoded string: bytes [off, off+len) of the arena; present == 0 means absent (or not a string). */
typedef struct {
    Py_ssize_t off, len;
    int present;
} Str;

enum { TK_ALT, TK_TITLE, TK_DIT, N_TEXT };

typedef struct {
    Str url, text[N_TEXT];
} Link;

/* Node kinds: where a value sits on the tracked path (Envelope -> Payload-Metadata -> ...). */
enum {
    K_NONE,    /* untracked: validated only */
    K_ROOT,
    K_ENV,     /* Envelope */
    K_PAYLOAD, /* Envelope.Payload-Metadata */
    K_HTTP,    /* ...HTTP-Response-Metadata */
    K_HTML,    /* ...HTML-Metadata */
    K_HEAD,    /* ...HTML-Metadata.Head */
    K_WHM,     /* Envelope.WARC-Header-Metadata */
    K_LINKS,   /* ...HTML-Metadata.Links (array) */
    K_LINK,    /* one element of Links */
    /* string captures */
    K_BASE, K_TARGET, K_DATE, K_PATH, K_URL, K_ALT, K_TITLE, K_DIT,
};

enum { T_STR, T_NUM, T_OBJ, T_ARR, T_TRUE, T_FALSE, T_NULL };

typedef struct {
    const unsigned char *p, *end;
    int fail;
    Arena arena;
    Link *links;
    Py_ssize_t nlinks, caplinks;
    Str target, date, base;
    int has_env, has_payload;
    /* the link being parsed */
    Link cur;
    int cur_path_state; /* 0 no path yet, 1 IMG path, 2 other path */
} Scan;

static unsigned char plain_char[256]; /* 1: byte that can be copied as is inside a JSON string */
static const unsigned char *IMG_PREFIX = (const unsigned char *)"IMG@/src";

static void init_tables(void) {
    for (int c = 0; c < 256; c++) plain_char[c] = (c >= 0x20 && c < 0x80 && c != '"' && c != '\\');
}

#define FAIL(s) do { (s)->fail = 1; return -1; } while (0)

static inline void skip_ws(Scan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0 if invalid (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF). */
static inline int utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (end - p >= 2 && (p[1] & 0xC0) == 0x80) return 2;
        return 0;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (end - p < 3) return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (end - p < 4) return 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        return 4;
    }
    return 0;
}

static inline int hex4(const unsigned char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    *out = v;
    return 0;
}

/* Parse the string at s->p (on its opening quote). With out != NULL the decoded UTF-8 goes to the
 * arena. *escaped tells whether the raw form had a backslash (keys with one are not matched). */
static int parse_string(Scan *s, Str *out, int *escaped) {
    const unsigned char *p = s->p + 1, *end = s->end;
    int esc = 0;
    if (out) {
        out->off = s->arena.len;
        out->len = 0;
        out->present = 0;
    }
    for (;;) {
        const unsigned char *run = p;
#ifdef __SSE2__
        /* 16 bytes at a time: stop at the first '"', '\\', control or non-ASCII byte */
        {
            const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
            while (end - p >= 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)p);
                /* bytes < 0x20 or >= 0x80: signed compare v < 0x20 catches both (0x80.. are negative) */
                __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                           _mm_cmplt_epi8(v, space));
                int mask = _mm_movemask_epi8(bad);
                if (mask) {
                    p += __builtin_ctz((unsigned)mask);
                    break;
                }
                p += 16;
            }
        }
#endif
        while (p < end && plain_char[*p]) p++;
        if (out && p > run) {
            if (arena_reserve(&s->arena, p - run) < 0) FAIL(s);
            memcpy(s->arena.buf + s->arena.len, run, (size_t)(p - run));
            s->arena.len += p - run;
        }
        if (p >= end) FAIL(s);
        unsigned char c = *p;
        if (c == '"') {
            s->p = p + 1;
            if (out) {
                out->len = s->arena.len - out->off;
                out->present = 1;
            }
            if (escaped) *escaped = esc;
            return 0;
        }
        if (c < 0x20) FAIL(s); /* raw control character: invalid JSON */
        if (c >= 0x80) {
            int n = utf8_seq(p, end);
            if (!n) FAIL(s);
            if (out) {
                if (arena_reserve(&s->arena, n) < 0) FAIL(s);
                memcpy(s->arena.buf + s->arena.len, p, (size_t)n);
                s->arena.len += n;
            }
            p += n;
            continue;
        }
        /* backslash escape */
        esc = 1;
        if (end - p < 2) FAIL(s);
        unsigned char e = p[1];
        char ch;
        switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                unsigned cp;
                if (end - p < 6 || hex4(p + 2, &cp) < 0) FAIL(s);
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) FAIL(s); /* lone low surrogate */
                if (cp >= 0xD800 && cp <= 0xDBFF) {        /* needs its low half right after */
                    unsigned lo;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) < 0) FAIL(s);
                    if (lo < 0xDC00 || lo > 0xDFFF) FAIL(s);
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (out) {
                    unsigned char b[4];
                    int n;
                    if (cp < 0x80) { b[0] = (unsigned char)cp; n = 1; }
                    else if (cp < 0x800) { b[0] = 0xC0 | (cp >> 6); b[1] = 0x80 | (cp & 0x3F); n = 2; }
                    else if (cp < 0x10000) {
                        b[0] = 0xE0 | (cp >> 12); b[1] = 0x80 | ((cp >> 6) & 0x3F); b[2] = 0x80 | (cp & 0x3F); n = 3;
                    } else {
                        b[0] = 0xF0 | (cp >> 18); b[1] = 0x80 | ((cp >> 12) & 0x3F);
                        b[2] = 0x80 | ((cp >> 6) & 0x3F); b[3] = 0x80 | (cp & 0x3F); n = 4;
                    }
                    if (arena_reserve(&s->arena, 4) < 0) FAIL(s);
                    memcpy(s->arena.buf + s->arena.len, b, (size_t)n);
                    s->arena.len += n;
                }
                continue;
            }
            default: FAIL(s);
        }
        if (out) {
            if (arena_reserve(&s->arena, 1) < 0) FAIL(s);
            s->arena.buf[s->arena.len++] = ch;
        }
        p += 2;
    }
}

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(Scan *s) {
    const unsigned char *p = s->p, *end = s->end;
    if (p < end && *p == '-') p++;
    if (p >= end) FAIL(s);
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else FAIL(s);
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') FAIL(s);
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') FAIL(s);
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    s->p = p;
    return T_NUM;
}

static int parse_value(Scan *s, int kind, int depth);

static int key_is(const unsigned char *k, Py_ssize_t n, const char *lit) {
    size_t m = strlen(lit);
    return (size_t)n == m && memcmp(k, lit, m) == 0;
}

/* The tracked keys: (object kind, key, kind of its value, slot for the duplicate check within that object). */
static const struct {
    int parent;
    const char *key;
    int child, slot;
} TRACKED[] = {
    {K_ROOT, "Envelope", K_ENV, 0},
    {K_ENV, "Payload-Metadata", K_PAYLOAD, 0},
    {K_ENV, "WARC-Header-Metadata", K_WHM, 1},
    {K_PAYLOAD, "HTTP-Response-Metadata", K_HTTP, 0},
    {K_HTTP, "HTML-Metadata", K_HTML, 0},
    {K_HTML, "Head", K_HEAD, 0},
    {K_HTML, "Links", K_LINKS, 1},
    {K_HEAD, "Base", K_BASE, 0},
    {K_WHM, "WARC-Target-URI", K_TARGET, 0},
    {K_WHM, "WARC-Date", K_DATE, 1},
    {K_LINK, "path", K_PATH, 0},
    {K_LINK, "url", K_URL, 1},
    {K_LINK, "alt", K_ALT, 2},
    {K_LINK, "title", K_TITLE, 3},
    {K_LINK, "data-image-title", K_DIT, 4},
};

/* Child kind of key k inside an object of kind `kind`; K_NONE for untracked keys. */
static int child_kind(int kind, const unsigned char *k, Py_ssize_t n, int *slot) {
    for (size_t i = 0; i < sizeof(TRACKED) / sizeof(TRACKED[0]); i++) {
        if (TRACKED[i].parent == kind && key_is(k, n, TRACKED[i].key)) {
            *slot = TRACKED[i].slot;
            return TRACKED[i].child;
        }
    }
    *slot = -1;
    return K_NONE;
}

static int push_link(Scan *s) {
    if (s->nlinks == s->caplinks) {
        Py_ssize_t cap = s->caplinks ? s->caplinks * 2 : 64;
        Link *nl = (Link *)realloc(s->links, (size_t)cap * sizeof(Link));
        if (!nl) FAIL(s);
        s->links = nl;
        s->caplinks = cap;
    }
    s->links[s->nlinks++] = s->cur;
    return 0;
}

/* At '{' or '[': consume it; 1 if the container is empty (its closing byte consumed too), else 0. */
static int open_container(Scan *s, unsigned char close) {
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 1;
    }
    return 0;
}

/* After a member or element: 1 at ',' (another follows), 0 at the closing byte (consumed), -1 otherwise. */
static int after_member(Scan *s, unsigned char close) {
    skip_ws(s);
    if (s->p < s->end && *s->p == ',') {
        s->p++;
        skip_ws(s);
        return 1;
    }
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return 0;
    }
    FAIL(s);
}

static int parse_object(Scan *s, int kind, int depth) {
    unsigned seen = 0;
    Py_ssize_t link_mark = s->arena.len;
    if (kind == K_LINK) {
        memset(&s->cur, 0, sizeof(s->cur));
        s->cur_path_state = 0;
    }
    if (open_container(s, '}')) return T_OBJ;
    for (;;) {
        if (s->p >= s->end || *s->p != '"') FAIL(s);
        const unsigned char *k = s->p + 1;
        int escaped = 0;
        if (parse_string(s, NULL, &escaped) < 0) return -1;
        Py_ssize_t klen = (s->p - 1) - k;
        int child = K_NONE, slot = -1;
        if (kind != K_NONE) {
            if (escaped) FAIL(s); /* could spell a tracked key: leave it to the Python path */
            child = child_kind(kind, k, klen, &slot);
            if (slot >= 0) {
                if (seen & (1u << slot)) FAIL(s); /* repeated key: last one wins in Python; not handled */
                seen |= 1u << slot;
            }
        }
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':') FAIL(s);
        s->p++;
        skip_ws(s);
        /* a link whose path is known not to be an image: its strings need no decoding */
        if (kind == K_LINK && s->cur_path_state == 2 && child >= K_URL) child = K_NONE;
        int t = parse_value(s, child, depth + 1);
        if (t < 0) return -1;
        switch (child) {
            case K_ENV: if (t != T_OBJ) FAIL(s); s->has_env = 1; break;
            case K_PAYLOAD: if (t != T_OBJ) FAIL(s); s->has_payload = 1; break;
            case K_HTTP: case K_HTML: case K_HEAD: case K_WHM:
                if (t != T_OBJ && t != T_NULL) FAIL(s);
                break;
            case K_LINKS: if (t != T_ARR && t != T_NULL) FAIL(s); break;
            case K_TARGET: case K_DATE: case K_URL: /* a string (captured) or null (absent) */
                if (t != T_STR && t != T_NULL) FAIL(s);
                break;
            case K_PATH: /* parse_value set cur_path_state */
                if (t != T_STR) FAIL(s); /* Python slices it: only strings behave alike */
                break;
            default: break;
        }
        int more = after_member(s, '}');
        if (more < 0) return -1;
        if (!more) break;
    }
    if (kind == K_LINK) {
        if (s->cur_path_state == 1 && s->cur.url.present) {
            if (push_link(s) < 0) return -1;
        } else {
            s->arena.len = link_mark; /* not an image link: drop its decoded strings */
        }
    }
    return T_OBJ;
}

static int parse_array(Scan *s, int kind, int depth) {
    int elem = kind == K_LINKS ? K_LINK : K_NONE;
    if (open_container(s, ']')) return T_ARR;
    for (;;) {
        int t = parse_value(s, elem, depth + 1);
        if (t < 0) return -1;
        if (elem == K_LINK && t != T_OBJ) FAIL(s); /* Python raises on a non-dict link */
        int more = after_member(s, ']');
        if (more < 0) return -1;
        if (!more) return T_ARR;
    }
}

static int parse_value(Scan *s, int kind, int depth) {
    if (depth > MAX_DEPTH) FAIL(s);
    if (s->p >= s->end) FAIL(s);
    unsigned char c = *s->p;
    switch (c) {
        case '{':
            /* a tracked object key whose value is an object: descend with its kind */
            return parse_object(s, (kind >= K_BASE) ? K_NONE : kind, depth);
        case '[':
            return parse_array(s, kind == K_LINKS ? K_LINKS : K_NONE, depth);
        case '"': {
            Str *out = NULL;
            switch (kind) {
                case K_BASE: out = &s->base; break;
                case K_TARGET: out = &s->target; break;
                case K_DATE: out = &s->date; break;
                case K_URL: out = &s->cur.url; break;
                case K_ALT: out = &s->cur.text[TK_ALT]; break;
                case K_TITLE: out = &s->cur.text[TK_TITLE]; break;
                case K_DIT: out = &s->cur.text[TK_DIT]; break;
                case K_PATH: {
                    Str path;
                    Py_ssize_t mark = s->arena.len;
                    if (parse_string(s, &path, NULL) < 0) return -1;
                    s->cur_path_state = (path.len >= 8 && memcmp(s->arena.buf + path.off, IMG_PREFIX, 8) == 0) ? 1 : 2;
                    s->arena.len = mark;
                    return T_STR;
                }
                default: break;
            }
            if (parse_string(s, out, NULL) < 0) return -1;
            return T_STR;
        }
        case 't':
            if (s->end - s->p >= 4 && memcmp(s->p, "true", 4) == 0) { s->p += 4; return T_TRUE; }
            FAIL(s);
        case 'f':
            if (s->end - s->p >= 5 && memcmp(s->p, "false", 5) == 0) { s->p += 5; return T_FALSE; }
            FAIL(s);
        case 'n':
            if (s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0) { s->p += 4; return T_NULL; }
            FAIL(s);
        default:
            if (c == '-' || (c >= '0' && c <= '9')) return parse_number(s);
            FAIL(s);
    }
}

/* ---- str.strip() and the URL shortcuts on UTF-8 bytes --------------------------------------- */

/* Length of the whitespace character (str.isspace()) starting at p, or 0. The code points are
 * those of CPython's _PyUnicode_IsWhitespace; _native/test_kernels.py checks the table against isspace(). */
static inline int ws_len(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    if (c < 0x80) return ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20)) ? 1 : 0;
    Py_ssize_t n = end - p;
    if (c == 0xC2 && n >= 2 && (p[1] == 0x85 || p[1] == 0xA0)) return 2;
    if (c == 0xE1 && n >= 3 && p[1] == 0x9A && p[2] == 0x80) return 3;
    if (c == 0xE2 && n >= 3) {
        if (p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8A) || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF)) return 3;
        if (p[1] == 0x81 && p[2] == 0x9F) return 3;
    }
    if (c == 0xE3 && n >= 3 && p[1] == 0x80 && p[2] == 0x80) return 3;
    return 0;
}

/* str.strip() of the valid UTF-8 in [*a, *b). */
static void strip_utf8(const unsigned char **a, const unsigned char **b) {
    const unsigned char *s = *a, *e = *b;
    int n;
    while (s < e && (n = ws_len(s, e)) > 0) s += n;
    while (e > s) {
        const unsigned char *c = e - 1;
        while (c > s && (*c & 0xC0) == 0x80) c--; /* start of the last character */
        if (ws_len(c, e) == e - c) e = c;
        else break;
    }
    *a = s;
    *b = e;
}

/* pool._NOT_URL: characters no shortcut accepts anywhere */
static inline int not_url(unsigned char c) { return c <= 0x20 || c == 0x7F || c == '#' || c == '\\'; }

/* pool._QUERY followed by \Z, from position i */
static int query_tail(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
    if (i == n) return 1;
    if (s[i] != '?' || i + 1 == n) return 0;
    for (i++; i < n; i++)
        if (not_url(s[i])) return 0;
    return 1;
}

static inline int host_char(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

static inline int path_char(unsigned char c) { return !not_url(c) && c != ';' && c != '?'; }

/* pool._ABS_SIMPLE.match */
static int abs_simple(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i;
    if (n >= 7 && memcmp(s, "http://", 7) == 0) i = 7;
    else if (n >= 8 && memcmp(s, "https://", 8) == 0) i = 8;
    else return 0;
    Py_ssize_t h = i;
    while (i < n && host_char(s[i])) i++;
    if (i == h) return 0;
    if (i < n && s[i] == ':') {
        Py_ssize_t d = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == d) return 0;
    }
    if (i < n && s[i] == '/')
        for (i++; i < n && path_char(s[i]); i++) {}
    return query_tail(s, i, n);
}

/* pool._ROOT_SIMPLE.match */
static int root_simple(const unsigned char *s, Py_ssize_t n) {
    if (n < 2 || s[0] != '/' || s[1] == '/' || !path_char(s[1])) return 0;
    Py_ssize_t i = 2;
    while (i < n && path_char(s[i])) i++;
    return query_tail(s, i, n);
}

/* pool._REL_SIMPLE.match */
static int rel_simple(const unsigned char *s, Py_ssize_t n) {
    if (n < 1 || s[0] == '.' || s[0] == '/' || s[0] == ':' || !path_char(s[0])) return 0;
    Py_ssize_t i = 1;
    while (i < n && path_char(s[i]) && s[i] != ':') i++;
    return query_tail(s, i, n);
}

static int contains2(const unsigned char *s, Py_ssize_t n, char a, char b) {
    for (Py_ssize_t i = 0; i + 1 < n; i++)
        if (s[i] == a && s[i + 1] == b) return 1;
    return 0;
}

/* The page's shortcut state (UrlResolver.shortcut_parts()), as UTF-8. */
typedef struct {
    int parses;
    const char *origin, *scheme, *dir;
    Py_ssize_t origin_len, scheme_len, dir_len;
} Page;

static int out_put(Arena *o, const void *p, Py_ssize_t n) {
    if (n == 0) return 0; /* an empty arena has no buffer: memcpy(NULL, p, 0) is undefined */
    if (arena_reserve(o, n) < 0) return -1;
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

/* UrlResolver.resolve's shortcuts for the stripped src s[0:n]: 1 with the URL in `o`, 0 when
 * resolve() would reach urljoin (the caller then calls resolve() itself), -1 on memory error. */
static int resolve_shortcut(const Page *pg, const unsigned char *s, Py_ssize_t n, Arena *o) {
    o->len = 0;
    if (!pg->parses) return 0;
    if (abs_simple(s, n)) return out_put(o, s, n) < 0 ? -1 : 1;
    if (!pg->origin) return 0;
    if (root_simple(s, n) && !contains2(s, n, '/', '.')) {
        if (out_put(o, pg->origin, pg->origin_len) < 0 || out_put(o, s, n) < 0) return -1;
        return 1;
    }
    if (n >= 2 && s[0] == '/' && s[1] == '/') {
        if (out_put(o, pg->scheme, pg->scheme_len) < 0 || out_put(o, ":", 1) < 0 || out_put(o, s, n) < 0) return -1;
        if (abs_simple((const unsigned char *)o->buf, o->len)) return 1;
        o->len = 0;
        return 0;
    }
    if (!pg->dir) return 0;
    Py_ssize_t ups = 0;
    while (n - 3 * ups >= 3 && memcmp(s + 3 * ups, "../", 3) == 0) ups++;
    const unsigned char *rest = s + 3 * ups;
    Py_ssize_t rn = n - 3 * ups;
    if (!rel_simple(rest, rn) || contains2(rest, rn, '/', '.') || contains2(rest, rn, '/', '/')) return 0;
    if (out_put(o, pg->origin, pg->origin_len) < 0) return -1;
    if (!ups) {
        if (out_put(o, pg->dir, pg->dir_len) < 0 || out_put(o, s, n) < 0) return -1;
        return 1;
    }
    /* dir = "/d1/d2/.../dk/": keep "/" + the first max(0, k - ups) directories */
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 1; i < pg->dir_len; i++)
        if (pg->dir[i] == '/') k++;
    Py_ssize_t keep = k > ups ? k - ups : 0, i = 0;
    for (Py_ssize_t seen = 0; seen <= keep; i++) /* i ends just past the (keep+1)-th '/' */
        if (pg->dir[i] == '/') seen++;
    if (out_put(o, pg->dir, i) < 0 || out_put(o, rest, rn) < 0) return -1;
    return 1;
}

/* ---- rows() --------------------------------------------------------------------------------- */

static PyObject *KEY_OBJ[N_TEXT];

static int utf8_of(PyObject *o, const char **p, Py_ssize_t *n) {
    if (o == Py_None) {
        *p = NULL;
        *n = 0;
        return 0;
    }
    *p = PyUnicode_AsUTF8AndSize(o, n);
    return *p ? 0 : -1;
}

/* A Page from UrlResolver.shortcut_parts() (str or None each); -1 with an exception if one is not UTF-8-encodable. */
static int page_from_parts(Page *pg, int parses, PyObject *origin, PyObject *scheme, PyObject *dir) {
    memset(pg, 0, sizeof(*pg));
    pg->parses = parses;
    if (utf8_of(origin, &pg->origin, &pg->origin_len) < 0 || utf8_of(scheme, &pg->scheme, &pg->scheme_len) < 0 ||
        utf8_of(dir, &pg->dir, &pg->dir_len) < 0)
        return -1;
    if (pg->origin && !pg->scheme) pg->origin = NULL;
    return 0;
}

static PyObject *str_or_none(Scan *s, const Str *v) {
    if (!v->present) Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(s->arena.buf + v->off, v->len, NULL);
}

static int append_row(PyObject **lists, PyObject **vals) {
    for (int i = 0; i < 6; i++)
        if (PyList_Append(lists[i], vals[i]) < 0) return -1;
    return 0;
}

static const char *COL_NAMES[6] = {"url", "text", "text_key", "record_offset", "page_url", "fetch_time"};

/* Emit the rows of the scanned image links for a page with shortcut state `pg`. Sources the shortcuts do not
 * cover go to resolve_fn(src), made by factory(page_url) on first need when resolve_fn is NULL. `pages` is 1 when
 * the page was taken in C (the counts then include pages_with_images and images_seen), 0 when page_cb did it.
 * Returns the counts tuple, or NULL on error. */
static PyObject *emit(Scan *s, PyObject *page_url, PyObject *fetch_time, PyObject *resolve_fn, PyObject *factory,
                      const Page *pgp, int pages, PyObject *cols, PyObject *offset) {
    PyObject *lists[6] = {0};
    PyObject *result = NULL;
    Arena out = {0};
    long no_src = 0, data_uri = 0, bad_url = 0, no_text = 0;
    Py_XINCREF(resolve_fn);
    for (int i = 0; i < 6; i++) {
        lists[i] = PyObject_GetAttrString(cols, COL_NAMES[i]);
        if (!lists[i] || !PyList_Check(lists[i])) {
            if (lists[i]) PyErr_SetString(PyExc_TypeError, "PoolColumns attributes must be lists");
            goto done;
        }
    }
    for (Py_ssize_t li = 0; li < s->nlinks; li++) {
        Link *L = &s->links[li];
        const unsigned char *a = (const unsigned char *)s->arena.buf + L->url.off, *b = a + L->url.len;
        strip_utf8(&a, &b);
        Py_ssize_t n = b - a;
        if (!n) { no_src++; continue; }
        if (n >= 5 && (a[0] | 0x20) == 'd' && (a[1] | 0x20) == 'a' && (a[2] | 0x20) == 't' && (a[3] | 0x20) == 'a' &&
            a[4] == ':') { data_uri++; continue; }
        PyObject *url;
        int r = resolve_shortcut(pgp, a, n, &out);
        if (r < 0) { PyErr_NoMemory(); goto done; }
        if (r) {
            url = PyUnicode_DecodeUTF8(out.buf, out.len, NULL);
        } else {
            if (!resolve_fn && !(resolve_fn = PyObject_CallOneArg(factory, page_url))) goto done;
            PyObject *src = PyUnicode_DecodeUTF8((const char *)a, n, NULL);
            if (!src) goto done;
            url = PyObject_CallOneArg(resolve_fn, src);
            Py_DECREF(src);
        }
        if (!url) goto done;
        if (url == Py_None) { Py_DECREF(url); bad_url++; continue; }
        int added = 0;
        for (int k = 0; k < N_TEXT; k++) {
            if (!L->text[k].present) continue;
            unsigned char *t = (unsigned char *)s->arena.buf + L->text[k].off, *te = t + L->text[k].len;
            for (unsigned char *q = t; q < te; q++)
                if (*q == '\n' || *q == '\r') *q = ' ';
            const unsigned char *ta = t, *tb = te;
            strip_utf8(&ta, &tb);
            if (ta == tb) continue;
            PyObject *text = PyUnicode_DecodeUTF8((const char *)ta, tb - ta, NULL);
            if (!text) { Py_DECREF(url); goto done; }
            PyObject *vals[6] = {url, text, KEY_OBJ[k], offset, page_url, fetch_time};
            int rc = append_row(lists, vals);
            Py_DECREF(text);
            if (rc < 0) { Py_DECREF(url); goto done; }
            added = 1;
        }
        Py_DECREF(url);
        if (!added) no_text++;
    }
    result = Py_BuildValue("(llllin)", no_src, data_uri, bad_url, no_text, pages, pages ? s->nlinks : 0);
done:
    for (int i = 0; i < 6; i++) Py_XDECREF(lists[i]);
    Py_XDECREF(resolve_fn);
    free(out.buf);
    return result;
}

/* pool.UrlResolver(page_url) without a <base href>, for a page URL its regex _PAGE_SIMPLE takes apart by slicing
 * (http(s), ASCII host without userinfo or brackets, no params): the shortcut state as pointers into u[0:n].
 * 0 for any other URL: the Python constructor decides (urlparse). */
static int page_parts(const unsigned char *u, Py_ssize_t n, Page *pg) {
    Py_ssize_t i;
    if (n >= 7 && memcmp(u, "http://", 7) == 0) i = 7;
    else if (n >= 8 && memcmp(u, "https://", 8) == 0) i = 8;
    else return 0;
    Py_ssize_t host = i;
    for (; i < n; i++) { /* netloc: [^/?#;@\[\]\\\x00-\x20\x7f]+, then .isascii() */
        unsigned char c = u[i];
        if (c == '/' || c == '?' || c == '#' || c == ';' || c == '@' || c == '[' || c == ']' || c == '\\' || c <= 0x20 ||
            c == 0x7F)
            break;
        if (c >= 0x80) return 0;
    }
    if (i == host || u[host] == ':') return 0; /* empty netloc or host: the Python path */
    Py_ssize_t netloc_end = i, path = i;
    if (i < n && u[i] == '/')
        for (i++; i < n && u[i] != '?' && u[i] != '#' && u[i] != ';' && u[i] != '\\' && u[i] > 0x20 && u[i] != 0x7F;)
            i++;
    Py_ssize_t path_end = i;
    if (i < n && (u[i] == '?' || u[i] == '#'))
        for (i++; i < n && u[i] > 0x20 && u[i] != 0x7F;) i++;
    if (i != n) return 0;
    memset(pg, 0, sizeof(*pg));
    pg->parses = 1;
    pg->origin = (const char *)u;
    pg->origin_len = netloc_end;
    pg->scheme = (const char *)u;
    pg->scheme_len = u[4] == 's' ? 5 : 4;
    const unsigned char *p = u + path;
    Py_ssize_t pn = path_end - path;
    if (!contains2(p, pn, '/', '/') && !contains2(p, pn, '/', '.')) {
        Py_ssize_t last = pn - 1;
        while (last >= 0 && p[last] != '/') last--;
        pg->dir = last >= 0 ? (const char *)p : "/";
        pg->dir_len = last >= 0 ? last + 1 : 1;
    }
    return 1;
}

PyDoc_STRVAR(page_parts_doc,
"page_parts(page_url) -> (parses, origin, scheme, dir) | None\n\n"
"UrlResolver(page_url).shortcut_parts() as rows() computes it for plain page URLs; None where it asks Python (tests).");

static PyObject *py_page_parts(PyObject *self, PyObject *arg) {
    Py_ssize_t n;
    (void)self;
    const char *u = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!u) return NULL;
    Page pg;
    if (!page_parts((const unsigned char *)u, n, &pg)) Py_RETURN_NONE;
    PyObject *dir = pg.dir ? PyUnicode_DecodeUTF8(pg.dir, pg.dir_len, NULL) : Py_NewRef(Py_None);
    PyObject *res = dir ? Py_BuildValue("(Os#s#O)", Py_True, pg.origin, pg.origin_len, pg.scheme, pg.scheme_len, dir)
                        : NULL;
    Py_XDECREF(dir);
    return res;
}

static PyObject *ZERO_COUNTS;

PyDoc_STRVAR(rows_doc,
"rows(data, start, end, block, offset, page_cb, make_resolver, cols)\n"
"    -> (no_src, data_uri, bad_url, no_text, pages_with_images, images_seen) | None\n\n"
"Append the pool rows of the WAT JSON payload data[start:end] to `cols` (a PoolColumns).\n"
"A page with image links, an envelope URL and date, no <base href> and a plain URL (page_parts) is taken in C:\n"
"the last two counts are then 1 and its number of image links, and make_resolver(page_url).resolve-like\n"
"callables are made only for sources the shortcuts do not cover. Any other page goes to\n"
"page_cb(target_uri, warc_date, base, n_images, block), which counts the page itself and returns None (page\n"
"skipped) or (page_url, fetch_time, resolve, (parses, origin, scheme, dir)). Returns None, with nothing appended,\n"
"when the payload is outside the shape this fast path handles: the caller then parses it in Python.");

/* Rows of the payload buf[start:end] (see rows_doc). The WARC header block is passed to the page
 * callback: `block` if given, else a bytes copy of blk[0:blen] made only when a page needs it. */
static PyObject *payload_rows(const unsigned char *buf, Py_ssize_t start, Py_ssize_t end, PyObject *block,
                              const char *blk, Py_ssize_t blen, PyObject *offset, PyObject *page_cb,
                              PyObject *make_resolver, PyObject *cols) {
    PyObject *result = NULL;
    Scan s;
    memset(&s, 0, sizeof(s));
    s.p = buf + start;
    s.end = buf + end;
    skip_ws(&s);
    int t = (s.p < s.end && *s.p == '{') ? parse_value(&s, K_ROOT, 0) : -1;
    if (t >= 0) skip_ws(&s);
    if (t != T_OBJ || s.fail || s.p != s.end || !s.has_env || !s.has_payload) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (s.nlinks == 0) {
        result = Py_NewRef(ZERO_COUNTS);
        goto done;
    }
    Page pg;
    if (!s.base.present && s.target.present && s.target.len && s.date.present && s.date.len &&
        page_parts((const unsigned char *)s.arena.buf + s.target.off, s.target.len, &pg)) {
        /* wat.page_context for the common page (envelope URL and date, no <base href>, a plain URL), in C */
        PyObject *page_url = str_or_none(&s, &s.target), *fetch_time = page_url ? str_or_none(&s, &s.date) : NULL;
        if (fetch_time) {
            result = emit(&s, page_url, fetch_time, NULL, make_resolver, &pg, 1, cols, offset);
        }
        Py_XDECREF(page_url);
        Py_XDECREF(fetch_time);
        goto done;
    }
    PyObject *target = NULL, *date = NULL, *base = NULL, *page = NULL, *blk_obj = NULL;
    blk_obj = block ? Py_NewRef(block) : PyBytes_FromStringAndSize(blk, blen);
    if (blk_obj && (target = str_or_none(&s, &s.target)) && (date = str_or_none(&s, &s.date)) &&
        (base = str_or_none(&s, &s.base))) {
        page = PyObject_CallFunction(page_cb, "OOOnO", target, date, base, s.nlinks, blk_obj);
    }
    Py_XDECREF(target);
    Py_XDECREF(date);
    Py_XDECREF(base);
    Py_XDECREF(blk_obj);
    if (!page) goto done;
    if (page == Py_None) {
        result = Py_NewRef(ZERO_COUNTS);
    } else {
        PyObject *page_url, *fetch_time, *resolve_fn, *parses_obj, *origin, *scheme, *dir;
        if (PyArg_ParseTuple(page, "OOO(OOOO)", &page_url, &fetch_time, &resolve_fn, &parses_obj, &origin, &scheme,
                             &dir)) {
            if (page_from_parts(&pg, PyObject_IsTrue(parses_obj), origin, scheme, dir) < 0) {
                PyErr_Clear(); /* not encodable: every src goes through resolve() */
                pg.parses = 0;
            }
            result = emit(&s, page_url, fetch_time, resolve_fn, NULL, &pg, 0, cols, offset);
        }
    }
    Py_DECREF(page);
done:
    free(s.arena.buf);
    free(s.links);
    return result;
}

static PyObject *py_rows(PyObject *self, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t start, end;
    PyObject *block, *offset, *page_cb, *make_resolver, *cols, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnOOOOO", &buf, &start, &end, &block, &offset, &page_cb, &make_resolver, &cols))
        return NULL;
    if (start < 0 || end > buf.len || start > end)
        PyErr_SetString(PyExc_ValueError, "start/end outside the buffer");
    else
        result = payload_rows((const unsigned char *)buf.buf, start, end, block, NULL, 0, offset, page_cb,
                              make_resolver, cols);
    PyBuffer_Release(&buf);
    return result;
}

/* ---- member(): one gzip member holding one WARC record (Common Crawl's layout) ----------------- */

static const unsigned char *find_bytes(const unsigned char *h, Py_ssize_t hn, const char *needle, Py_ssize_t nn) {
    return (const unsigned char *)memmem(h, (size_t)hn, needle, (size_t)nn);
}

static inline int bytes_space(unsigned char c) { /* bytes.strip() */
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

/* wat.warc_header(block, name) for a name found in its canonical case: the stripped value, or 0 if
 * the canonical spelling is absent (the caller then leaves the member to the Python path). */
static int header_value(const unsigned char *blk, Py_ssize_t bn, const char *key, const unsigned char **v,
                        Py_ssize_t *vn) {
    Py_ssize_t kn = (Py_ssize_t)strlen(key);
    const unsigned char *i = find_bytes(blk, bn, key, kn);
    if (!i) return 0;
    i += kn;
    const unsigned char *j = find_bytes(i, blk + bn - i, "\r\n", 2);
    if (!j) j = blk + bn;
    while (i < j && bytes_space(*i)) i++;
    while (j > i && bytes_space(j[-1])) j--;
    *v = i;
    *vn = j - i;
    return 1;
}

PyDoc_STRVAR(member_doc,
"member(data, offset, page_cb, make_resolver, cols) -> rows()'s counts | None\n\n"
"One inflated gzip member of a WAT file, in the usual layout (exactly one valid WARC record, headers in\n"
"their canonical case): the rows of its payload as rows() gives them, all-zero counts for a record without\n"
"rows (not metadata; no IMG link and no sign of damage). None, with nothing appended, for anything else:\n"
"the caller then frames and reads the member in Python (wat.member_records). The caller counts the record.");

static PyObject *py_member(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *offset, *page_cb, *make_resolver, *cols, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*OOOO", &buf, &offset, &page_cb, &make_resolver, &cols)) return NULL;
    const unsigned char *d = (const unsigned char *)buf.buf, *v;
    Py_ssize_t n = buf.len, vn;
    /* wat.parse_warc_record(data, 0) */
    const unsigned char *he = n >= 5 && memcmp(d, "WARC/", 5) == 0 ? find_bytes(d, n, "\r\n\r\n", 4) : NULL;
    if (!he) goto python;
    Py_ssize_t bn = he - d;
    if (!header_value(d, bn, "\r\nContent-Length:", &v, &vn) || vn == 0 || vn > 15) goto python;
    Py_ssize_t length = 0;
    for (Py_ssize_t i = 0; i < vn; i++) {
        if (v[i] < '0' || v[i] > '9') goto python;
        length = length * 10 + (v[i] - '0');
    }
    Py_ssize_t start = bn + 4, end = start + length;
    if (end > n) goto python;
    /* wat.iter_warc_records: trailing CRLFs, then the member must end (one record per member) */
    Py_ssize_t pos = end;
    while (n - pos >= 2 && d[pos] == '\r' && d[pos + 1] == '\n') pos += 2;
    if (pos != n) goto python;
    if (!header_value(d, bn, "\r\nWARC-Type:", &v, &vn)) goto python;
    static const char META[] = "metadata";
    int is_meta = vn == 8;
    for (Py_ssize_t i = 0; is_meta && i < 8; i++) is_meta = (v[i] | (v[i] >= 'A' && v[i] <= 'Z' ? 0x20 : 0)) == META[i];
    if (!is_meta) { result = Py_NewRef(ZERO_COUNTS); goto done; }
    if (!find_bytes(d + start, length, "\"IMG@/src", 9)) {
        /* wat._looks_broken: the payload must end in '}' (within its last 16 bytes, bytes.rstrip()) and
         * name Payload-Metadata; otherwise the Python path parses it to count the defect */
        Py_ssize_t lo = end - 16 > start ? end - 16 : start, e = end;
        while (e > lo && bytes_space(d[e - 1])) e--;
        if (e > lo && d[e - 1] == '}' && find_bytes(d + start, length, "\"Payload-Metadata\"", 18)) {
            result = Py_NewRef(ZERO_COUNTS);
            goto done;
        }
        goto python;
    }
    result = payload_rows(d, start, end, NULL, (const char *)d, bn, offset, page_cb, make_resolver, cols);
    goto done;
python:
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&buf);
    return result;
}

PyDoc_STRVAR(resolve_doc,
"resolve(src, parses, origin, scheme, dir) -> str | None\n\n"
"The URL shortcuts alone (for tests): the resolved URL, or None where UrlResolver.resolve would call urljoin.");

static PyObject *py_resolve(PyObject *self, PyObject *args) {
    PyObject *src, *origin, *scheme, *dir;
    int parses;
    if (!PyArg_ParseTuple(args, "UpOOO", &src, &parses, &origin, &scheme, &dir)) return NULL;
    Page pg;
    const char *sp;
    Py_ssize_t sn;
    if (utf8_of(src, &sp, &sn) < 0 || page_from_parts(&pg, parses, origin, scheme, dir) < 0) return NULL;
    Arena out = {0};
    int r = resolve_shortcut(&pg, (const unsigned char *)sp, sn, &out);
    PyObject *res;
    if (r < 0) res = PyErr_NoMemory();
    else if (r == 0) res = Py_NewRef(Py_None);
    else res = PyUnicode_DecodeUTF8(out.buf, out.len, NULL);
    free(out.buf);
    return res;
}

PyDoc_STRVAR(strip_doc, "strip(s) -> str: str.strip() as this module computes it on UTF-8 (for tests).");

static PyObject *py_strip(PyObject *self, PyObject *arg) {
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!p) return NULL;
    const unsigned char *a = (const unsigned char *)p, *b = a + n;
    strip_utf8(&a, &b);
    return PyUnicode_DecodeUTF8((const char *)a, b - a, NULL);
}

/* ---- pool ids: blake2b-64 pair ids and sha224 image uuids --------------------------------------
 * pool.pair_ids / pool.image_uuid spend ~3 us per row in hashlib call overhead; these are the same
 * functions (RFC 7693 BLAKE2b, FIPS 180-4 SHA-224), checked against hashlib in _native/test_kernels.py. */

static const uint64_t B2_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};
static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }
static inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static inline uint64_t load64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void b2_compress(uint64_t h[8], const unsigned char block[128], uint64_t t, int last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; i++) m[i] = load64le(block + 8 * i);
    for (int i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = B2_IV[i]; }
    v[12] ^= t; /* messages here are far below 2^64 bytes: the high counter word stays 0 */
    if (last) v[14] = ~v[14];
#define B2G(a, b, c, d, x, y)                 \
    do {                                      \
        v[a] = v[a] + v[b] + (x);             \
        v[d] = rotr64(v[d] ^ v[a], 32);       \
        v[c] = v[c] + v[d];                   \
        v[b] = rotr64(v[b] ^ v[c], 24);       \
        v[a] = v[a] + v[b] + (y);             \
        v[d] = rotr64(v[d] ^ v[a], 16);       \
        v[c] = v[c] + v[d];                   \
        v[b] = rotr64(v[b] ^ v[c], 63);       \
    } while (0)
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r];
        B2G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
#undef B2G
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* Incremental BLAKE2b with an 8-byte digest (no key): the first output word is the digest. */
typedef struct {
    uint64_t h[8], t;
    unsigned char buf[128];
    size_t n;
} B2;

static void b2_init(B2 *c) {
    memcpy(c->h, B2_IV, sizeof(c->h));
    c->h[0] ^= 0x01010000ULL ^ 8; /* depth 1, fanout 1, digest length 8 */
    c->t = 0;
    c->n = 0;
}

static void b2_update(B2 *c, const unsigned char *p, size_t len) {
    while (len) {
        if (c->n == 128) { /* keep the last block for the final flag */
            c->t += 128;
            b2_compress(c->h, c->buf, c->t, 0);
            c->n = 0;
        }
        size_t k = 128 - c->n < len ? 128 - c->n : len;
        memcpy(c->buf + c->n, p, k);
        c->n += k;
        p += k;
        len -= k;
    }
}

static uint64_t b2_final(B2 *c) {
    c->t += c->n;
    memset(c->buf + c->n, 0, 128 - c->n);
    b2_compress(c->h, c->buf, c->t, 1);
    return c->h[0];
}

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static void sha256_compress(uint32_t h[8], const unsigned char *b) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = ((uint32_t)b[4 * i] << 24) | ((uint32_t)b[4 * i + 1] << 16) | ((uint32_t)b[4 * i + 2] << 8) | b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[i] + w[i];
        uint32_t t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = bb; bb = a; a = t1 + t2;
    }
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI_PATH 1
/* sha256_compress with the x86 SHA extensions (4 rounds per sha256rnds2 pair): ~5x the portable loop. The message
 * schedule keeps the last 4 groups of 4 words in m[g % 4]. */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_compress_ni(uint32_t h[8], const unsigned char *b) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); /* CDAB */
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);  /* EFGH */
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);                                        /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);                                             /* CDGH */
    const __m128i abef = s0, cdgh = s1;
    __m128i m[4];
    for (int g = 0; g < 16; g++) {
        __m128i w;
        if (g < 4) {
            w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(b + 16 * g)), bswap);
        } else { /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16] for the 4 words of group g */
            w = _mm_sha256msg1_epu32(m[g % 4], m[(g + 1) % 4]);
            w = _mm_add_epi32(w, _mm_alignr_epi8(m[(g + 3) % 4], m[(g + 2) % 4], 4));
            w = _mm_sha256msg2_epu32(w, m[(g + 3) % 4]);
        }
        m[g % 4] = w;
        __m128i k = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&SHA_K[4 * g]));
        s1 = _mm_sha256rnds2_epu32(s1, s0, k);
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(k, 0x0E));
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
    tmp = _mm_shuffle_epi32(s0, 0x1B);                              /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);                               /* DCHG */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(tmp, s1, 0xF0)); /* DCBA */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, tmp, 8));    /* HGFE */
}

static int cpu_has_sha_ni(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9))) return 0; /* SSE4.1, SSSE3 */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 29) & 1; /* SHA */
}
#endif

static void (*sha256_block)(uint32_t h[8], const unsigned char *b) = sha256_compress;

/* The first 24 hex digits of sha224(p[0:len]) into out[24]. */
static void sha224_hex24(const unsigned char *p, size_t len, char out[24]) {
    uint32_t h[8] = {0xc1059ed8, 0x367cd507, 0x3070dd17, 0xf70e5939, 0xffc00b31, 0x68581511, 0x64f98fa7, 0xbefa4fa4};
    size_t full = len / 64;
    for (size_t i = 0; i < full; i++) sha256_block(h, p + 64 * i);
    unsigned char tail[128] = {0};
    size_t r = len - 64 * full;
    memcpy(tail, p + 64 * full, r);
    tail[r] = 0x80;
    size_t tl = r + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tl - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha256_block(h, tail);
    if (tl == 128) sha256_block(h, tail + 64);
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            unsigned char byte = (unsigned char)(h[i] >> (24 - 8 * j));
            out[8 * i + 2 * j] = HEX[byte >> 4];
            out[8 * i + 2 * j + 1] = HEX[byte & 15];
        }
}

/* Parse args as two lists of the same length (ids(), token_table()): the length, or -1 with an exception. */
static Py_ssize_t two_lists(PyObject *args, PyObject **a, PyObject **b, const char *names) {
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, a, &PyList_Type, b)) return -1;
    if (PyList_GET_SIZE(*a) != PyList_GET_SIZE(*b)) {
        PyErr_Format(PyExc_ValueError, "%s differ in length", names);
        return -1;
    }
    return PyList_GET_SIZE(*a);
}

PyDoc_STRVAR(sha_doc,
"sha_extensions(use: bool | None = None) -> bool\n\n"
"Whether sha224 runs on the x86 SHA extensions (detected at import); use=False/True switches (tests).");

static PyObject *py_sha_extensions(PyObject *self, PyObject *args) {
    int use = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "|p", &use)) return NULL;
#ifdef HAVE_SHA_NI_PATH
    if (use == 1 && !cpu_has_sha_ni()) {
        PyErr_SetString(PyExc_RuntimeError, "this CPU has no SHA extensions");
        return NULL;
    }
    if (use >= 0) sha256_block = use ? sha256_compress_ni : sha256_compress;
    return PyBool_FromLong(sha256_block == sha256_compress_ni);
#else
    if (use == 1) {
        PyErr_SetString(PyExc_RuntimeError, "built without the SHA extension path");
        return NULL;
    }
    Py_RETURN_FALSE;
#endif
}

PyDoc_STRVAR(ids_doc,
"ids(urls, texts) -> (pair_ids: bytes, image_uuids: list[str])\n\n"
"pool.pair_ids (little-endian blake2b-64 of url NUL text, as 8 bytes per row) and pool.image_uuid per row\n"
"(the first 24 hex digits of sha224(url); a URL equal to the previous row's is hashed once).");

static PyObject *py_ids(PyObject *self, PyObject *args) {
    PyObject *urls, *texts;
    (void)self;
    Py_ssize_t n = two_lists(args, &urls, &texts, "urls and texts");
    if (n < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *uuids = PyList_New(n);
    if (!out || !uuids) goto fail;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    PyObject *prev_url = NULL, *prev_uuid = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *u = PyList_GET_ITEM(urls, i), *t = PyList_GET_ITEM(texts, i);
        Py_ssize_t ul, tl;
        const char *us = PyUnicode_Check(u) ? PyUnicode_AsUTF8AndSize(u, &ul) : NULL;
        const char *ts = PyUnicode_Check(t) ? PyUnicode_AsUTF8AndSize(t, &tl) : NULL;
        if (!us || !ts) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "urls and texts must be str");
            goto fail;
        }
        B2 c;
        b2_init(&c);
        b2_update(&c, (const unsigned char *)us, (size_t)ul);
        b2_update(&c, (const unsigned char *)"", 1);
        b2_update(&c, (const unsigned char *)ts, (size_t)tl);
        uint64_t id = b2_final(&c);
        for (int k = 0; k < 8; k++) o[8 * i + k] = (unsigned char)(id >> (8 * k));
        PyObject *uuid;
        if (prev_url && (u == prev_url || PyUnicode_Compare(u, prev_url) == 0)) {
            uuid = Py_NewRef(prev_uuid);
        } else {
            char hex[24];
            sha224_hex24((const unsigned char *)us, (size_t)ul, hex);
            uuid = PyUnicode_FromStringAndSize(hex, 24);
            if (!uuid) goto fail;
        }
        PyList_SET_ITEM(uuids, i, uuid);
        prev_url = u;
        prev_uuid = uuid;
    }
    PyObject *res = PyTuple_Pack(2, out, uuids);
    Py_DECREF(out);
    Py_DECREF(uuids);
    return res;
fail:
    Py_XDECREF(out);
    Py_XDECREF(uuids);
    return NULL;
}

/* ---- token matcher: matching.Matcher's token-join engine as one hash table ----------------------
 * Same algorithm as Matcher._token_hits (see its docstring): the spaced text is split at every space; entry e
 * matches iff e equals a run of consecutive tokens. Keys are the entries and the token prefixes of multi-token
 * entries, values (u + 1) << 1 | grows. In the spaced buffer tokens are separated by exactly one space, so the key
 * of a run is the buffer slice from its first token's start to its last token's end: no string is built. */

typedef struct {     /* 16 bytes: four slots per cache line */
    uint32_t v;      /* (u + 1) << 1 | grows; 0 marks an empty slot */
    uint32_t tag;    /* high half of the key's hash: most misses never touch the key bytes */
    uint32_t off, len;
} TSlot;

typedef struct {
    TSlot *slots;
    uint64_t mask;
    char *keys;
} TTable;

static inline uint64_t key_hash(const unsigned char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    return h ^ (h >> 32);
}

static inline int slot_is(const TTable *t, const TSlot *sl, uint64_t h, const unsigned char *p, size_t n) {
    return sl->tag == (uint32_t)(h >> 32) && sl->len == n && (n == 0 || memcmp(t->keys + sl->off, p, n) == 0);
}

static inline uint64_t table_get_h(const TTable *t, uint64_t h, const unsigned char *p, size_t n) {
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const TSlot *sl = &t->slots[i];
        if (!sl->v) return 0;
        if (slot_is(t, sl, h, p, n)) return sl->v;
    }
}

static void table_free(PyObject *capsule) {
    TTable *t = (TTable *)PyCapsule_GetPointer(capsule, "metaclip.token_table");
    if (!t) return;
    free(t->slots);
    free(t->keys);
    free(t);
}

PyDoc_STRVAR(token_table_doc,
"token_table(keys: list[str], values: list[int]) -> capsule\n\n"
"The join table of Matcher's token engine (key -> (u + 1) << 1 | grows), for token_match. Keys must be distinct\n"
"and valid UTF-8; values > 0.");

static PyObject *py_token_table(PyObject *self, PyObject *args) {
    PyObject *keys, *values;
    (void)self;
    Py_ssize_t n = two_lists(args, &keys, &values, "keys and values");
    if (n < 0) return NULL;
    TTable *t = (TTable *)calloc(1, sizeof(TTable));
    if (!t) return PyErr_NoMemory();
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n + 1) cap *= 2;
    t->mask = cap - 1;
    t->slots = (TSlot *)calloc(cap, sizeof(TSlot));
    Arena a = {0};
    if (!t->slots) goto nomem;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t kn;
        const char *k = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(keys, i), &kn);
        if (!k) goto fail;
        unsigned long long v = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(values, i));
        if (PyErr_Occurred()) goto fail;
        if (v == 0 || v > 0xFFFFFFFFULL || a.len + kn > 0xFFFFFFFFLL) {
            PyErr_SetString(PyExc_ValueError, "values must be in [1, 2**32) and keys fit 4 GiB");
            goto fail;
        }
        if (out_put(&a, k, kn) < 0) goto nomem;
        t->keys = a.buf; /* slot_is reads keys from the arena as it grows */
        uint64_t h = key_hash((const unsigned char *)k, (size_t)kn), j = h & t->mask;
        while (t->slots[j].v) {
            if (slot_is(t, &t->slots[j], h, (const unsigned char *)k, (size_t)kn)) {
                PyErr_SetString(PyExc_ValueError, "duplicate key");
                goto fail;
            }
            j = (j + 1) & t->mask;
        }
        TSlot *sl = &t->slots[j];
        sl->v = (uint32_t)v;
        sl->tag = (uint32_t)(h >> 32);
        sl->off = (uint32_t)(a.len - kn);
        sl->len = (uint32_t)kn;
    }
    t->keys = a.buf;
    PyObject *cap_obj = PyCapsule_New(t, "metaclip.token_table", table_free);
    if (!cap_obj) {
        free(t->slots);
        free(t->keys);
        free(t);
    }
    return cap_obj;
nomem:
    PyErr_NoMemory();
fail:
    free(t->slots);
    free(a.buf);
    free(t);
    return NULL;
}

static inline int spacing_punct(unsigned char c) {
    return c == ',' || c == '.' || c == ';' || c == ':' || c == '?' || c == '!' || c == '`';
}

PyDoc_STRVAR(token_match_doc,
"token_match(table, texts: Sequence[str]) -> (rows: bytes, uids: bytes) | None\n\n"
"(row, unique index) hits as native uint64 arrays, possibly repeated: Matcher._token_hits computed in C.\n"
"None if some text is not valid UTF-8 (lone surrogates): the caller routes the batch as before.");

#define MATCH_BLOCK 64 /* texts tokenised together, so that their table lookups can overlap */

typedef struct {
    Py_ssize_t s0, s1; /* the token's bytes in the block's spaced buffer */
    uint64_t h1, h2;   /* hash of the token, and of the token + the next one (when looked up) */
    uint64_t v1;       /* the token's table value */
    Py_ssize_t last;   /* index of the last token of its text */
} Tok;

/* The hits of texts[0:n] (UTF-8) into rows/uids; no Python API, so it runs without the GIL. -1: out of memory. */
static int match_texts(const TTable *t, const char *const *txts, const Py_ssize_t *lens, Py_ssize_t n, Arena *rows,
                       Arena *uids) {
    Arena sp = {0};
    Tok *tok = NULL;
    Py_ssize_t tcap = 0, first[MATCH_BLOCK + 1];
    int rc = -1;
    for (Py_ssize_t r0 = 0; r0 < n; r0 += MATCH_BLOCK) {
        Py_ssize_t r1 = r0 + MATCH_BLOCK < n ? r0 + MATCH_BLOCK : n, nt = 0;
        sp.len = 0;
        /* A: space and split each text of the block, hash its tokens, prefetch their slots */
        for (Py_ssize_t r = r0; r < r1; r++) {
            const char *txt = txts[r];
            Py_ssize_t len = lens[r];
            /* matching.spacing(t)[1:-1]: each of , . ; : ? ! ` gets a space on both sides, TAB/LF/CR become a space */
            if (arena_reserve(&sp, 3 * len + 1) < 0) goto done;
            Py_ssize_t base = sp.len;
            char *w = sp.buf + base;
            for (Py_ssize_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)txt[i];
                if (spacing_punct(c)) { *w++ = ' '; *w++ = (char)c; *w++ = ' '; }
                else if (c == '\t' || c == '\n' || c == '\r') *w++ = ' ';
                else *w++ = (char)c;
            }
            Py_ssize_t end = w - sp.buf, st = base;
            sp.len = end;
            first[r - r0] = nt;
            for (Py_ssize_t i = base; i <= end; i++) { /* split(" "), empty tokens included */
                if (i == end || sp.buf[i] == ' ') {
                    if (nt == tcap) {
                        tcap = tcap ? 2 * tcap : 1024;
                        Tok *nb = (Tok *)realloc(tok, (size_t)tcap * sizeof(Tok));
                        if (!nb) goto done;
                        tok = nb;
                    }
                    Tok *k = &tok[nt++];
                    k->s0 = st;
                    k->s1 = i;
                    st = i + 1;
                }
            }
            for (Py_ssize_t a = first[r - r0]; a < nt; a++) {
                tok[a].last = nt - 1;
                tok[a].h1 = key_hash((const unsigned char *)sp.buf + tok[a].s0, (size_t)(tok[a].s1 - tok[a].s0));
                __builtin_prefetch(&t->slots[tok[a].h1 & t->mask]);
            }
        }
        first[r1 - r0] = nt;
        const unsigned char *b = (const unsigned char *)sp.buf;
        /* B: every token's own lookup; where a longer key can start with it, hash and prefetch the 2-token run */
        for (Py_ssize_t a = 0; a < nt; a++) {
            Tok *k = &tok[a];
            k->v1 = table_get_h(t, k->h1, b + k->s0, (size_t)(k->s1 - k->s0));
            if ((k->v1 & 1) && a < k->last) {
                k->h2 = key_hash(b + k->s0, (size_t)(tok[a + 1].s1 - k->s0));
                __builtin_prefetch(&t->slots[k->h2 & t->mask]);
            }
        }
        /* C: hits in text order; runs of 2 tokens use the prefetched lookup, longer ones look up as they go */
        for (Py_ssize_t r = r0; r < r1; r++) {
            for (Py_ssize_t a = first[r - r0]; a < first[r - r0 + 1]; a++) {
                Tok *k = &tok[a];
                uint64_t v = k->v1;
                for (Py_ssize_t e = a;;) {
                    if (!v) break;
                    if (v >= 2) {
                        uint64_t row = (uint64_t)r, uid = (v >> 1) - 1;
                        if (out_put(rows, &row, 8) < 0 || out_put(uids, &uid, 8) < 0) goto done;
                    }
                    if (!(v & 1) || e == k->last) break;
                    e++;
                    Py_ssize_t s0 = k->s0, s1 = tok[e].s1;
                    uint64_t h = e == a + 1 ? k->h2 : key_hash(b + s0, (size_t)(s1 - s0));
                    v = table_get_h(t, h, b + s0, (size_t)(s1 - s0));
                }
            }
        }
    }
    rc = 0;
done:
    free(sp.buf);
    free(tok);
    return rc;
}

static PyObject *py_token_match(PyObject *self, PyObject *args) {
    PyObject *cap, *texts;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &cap, &texts)) return NULL;
    TTable *t = (TTable *)PyCapsule_GetPointer(cap, "metaclip.token_table");
    if (!t) return NULL;
    /* a tuple copy keeps every str (and its UTF-8 buffer) alive while the GIL is released */
    PyObject *held = PySequence_Tuple(texts), *res = NULL;
    if (!held) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(held);
    const char **txts = (const char **)malloc((size_t)(n ? n : 1) * sizeof(char *));
    Py_ssize_t *lens = (Py_ssize_t *)malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    Arena rows = {0}, uids = {0};
    if (!txts || !lens) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *o = PyTuple_GET_ITEM(held, r);
        txts[r] = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &lens[r]) : NULL;
        if (!txts[r]) {
            if (PyUnicode_Check(o) && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
                PyErr_Clear(); /* lone surrogates: the caller routes the batch */
                res = Py_NewRef(Py_None);
            } else if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "texts must be str");
            }
            goto done;
        }
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS /* the lookups run in parallel with other threads (Matcher.match_batch(threads=N)) */
    rc = match_texts(t, txts, lens, n, &rows, &uids);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    {
        PyObject *rb = PyBytes_FromStringAndSize(rows.buf ? rows.buf : "", rows.len);
        PyObject *ub = PyBytes_FromStringAndSize(uids.buf ? uids.buf : "", uids.len);
        if (rb && ub) res = PyTuple_Pack(2, rb, ub);
        Py_XDECREF(rb);
        Py_XDECREF(ub);
    }
done:
    free(txts);
    free(lens);
    free(rows.buf);
    free(uids.buf);
    Py_DECREF(held);
    return res;
}

static PyMethodDef methods[] = {
    {"rows", py_rows, METH_VARARGS, rows_doc},
    {"member", py_member, METH_VARARGS, member_doc},
    {"resolve", py_resolve, METH_VARARGS, resolve_doc},
    {"strip", py_strip, METH_O, strip_doc},
    {"page_parts", py_page_parts, METH_O, page_parts_doc},
    {"ids", py_ids, METH_VARARGS, ids_doc},
    {"sha_extensions", py_sha_extensions, METH_VARARGS, sha_doc},
    {"token_table", py_token_table, METH_VARARGS, token_table_doc},
    {"token_match", py_token_match, METH_VARARGS, token_match_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_kernels", "Compiled kernels of the curation hot paths (see metaclip_assets/_native/README.md).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    init_tables();
#ifdef HAVE_SHA_NI_PATH
    if (cpu_has_sha_ni()) sha256_block = sha256_compress_ni;
#endif
    static const char *keys[N_TEXT] = {"alt", "title", "data-image-title"}; /* pool.TEXT_KEYS */
    for (int k = 0; k < N_TEXT; k++)
        if (!KEY_OBJ[k] && !(KEY_OBJ[k] = PyUnicode_InternFromString(keys[k]))) return NULL;
    if (!ZERO_COUNTS && !(ZERO_COUNTS = Py_BuildValue("(iiiiii)", 0, 0, 0, 0, 0, 0))) return NULL;
    return PyModule_Create(&moduledef);
}
