/* WAT rows: wat.read_wat's row builder (member()/rows()), with the URL shortcuts of urls.UrlResolver (resolve(),
 * page_parts()) and str.strip() on UTF-8 (strip()). After the gzip inflate (ISA-L) the Python reader spent ~2x
 * zcat's time in orjson (a dict per link) and in per-link Python (path filter, strip, URL shortcuts, list appends);
 * see bench/README.md. This validates the whole payload as strict JSON in one pass, decodes only the strings the
 * rows need, and appends the rows itself.
 *
 * Exactness contract: rows() either appends exactly the rows and counts that wat.rows_from_wat_json
 * gives for the orjson/json-parsed document, or returns None having appended nothing, and the
 * caller runs the Python path. It returns None for anything outside the common shape: invalid or
 * unusual JSON (invalid UTF-8, lone surrogate escapes, control characters, nesting > 256, a
 * trailing value), tracked keys written with escapes or repeated, tracked nodes of an unexpected
 * type, non-string paths or image urls. URL shortcuts mirror urls.UrlResolver.resolve line by
 * line; every src they do not cover is passed to that method itself. metaclip_assets_tests/
 * _native/test_kernels.py compares both paths on generated, real and randomly damaged records.
 */
#include "kernels.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_DEPTH 256

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

/* urls._NOT_URL: characters no shortcut accepts anywhere */
static inline int not_url(unsigned char c) { return c <= 0x20 || c == 0x7F || c == '#' || c == '\\'; }

/* urls._QUERY followed by \Z, from position i */
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

/* urls._ABS_SIMPLE.match */
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

/* urls._ROOT_SIMPLE.match */
static int root_simple(const unsigned char *s, Py_ssize_t n) {
    if (n < 2 || s[0] != '/' || s[1] == '/' || !path_char(s[1])) return 0;
    Py_ssize_t i = 2;
    while (i < n && path_char(s[i])) i++;
    return query_tail(s, i, n);
}

/* urls._REL_SIMPLE.match */
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

/* urls.UrlResolver(page_url) without a <base href>, for a page URL its regex _PAGE_SIMPLE takes apart by slicing
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

KERNEL_DOC(page_parts_doc,
"page_parts(page_url) -> (parses, origin, scheme, dir) | None\n\n"
"UrlResolver(page_url).shortcut_parts() as rows() computes it for plain page URLs; None where it asks Python (tests).");

KERNEL_API PyObject *py_page_parts(PyObject *self, PyObject *arg) {
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

KERNEL_DOC(rows_doc,
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

KERNEL_API PyObject *py_rows(PyObject *self, PyObject *args) {
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

/* framing.warc_header(block, name) for a name found in its canonical case: the stripped value, or 0 if
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

KERNEL_DOC(member_doc,
"member(data, offset, page_cb, make_resolver, cols) -> rows()'s counts | None\n\n"
"One inflated gzip member of a WAT file, in the usual layout (exactly one valid WARC record, headers in\n"
"their canonical case): the rows of its payload as rows() gives them, all-zero counts for a record without\n"
"rows (not metadata; no IMG link and no sign of damage). None, with nothing appended, for anything else:\n"
"the caller then frames and reads the member in Python (wat.member_records). The caller counts the record.");

KERNEL_API PyObject *py_member(PyObject *self, PyObject *args) {
    Py_buffer buf;
    PyObject *offset, *page_cb, *make_resolver, *cols, *result = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*OOOO", &buf, &offset, &page_cb, &make_resolver, &cols)) return NULL;
    const unsigned char *d = (const unsigned char *)buf.buf, *v;
    Py_ssize_t n = buf.len, vn;
    /* framing.parse_warc_record(data, 0) */
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
    /* framing.iter_warc_records: trailing CRLFs, then the member must end (one record per member) */
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

KERNEL_DOC(resolve_doc,
"resolve(src, parses, origin, scheme, dir) -> str | None\n\n"
"The URL shortcuts alone (for tests): the resolved URL, or None where UrlResolver.resolve would call urljoin.");

KERNEL_API PyObject *py_resolve(PyObject *self, PyObject *args) {
    PyObject *src, *origin, *scheme, *dir;
    int parses;
    (void)self;
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

KERNEL_DOC(strip_doc, "strip(s) -> str: str.strip() as this module computes it on UTF-8 (for tests).");

KERNEL_API PyObject *py_strip(PyObject *self, PyObject *arg) {
    Py_ssize_t n;
    (void)self;
    const char *p = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!p) return NULL;
    const unsigned char *a = (const unsigned char *)p, *b = a + n;
    strip_utf8(&a, &b);
    return PyUnicode_DecodeUTF8((const char *)a, b - a, NULL);
}

KERNEL_API int wat_rows_init(void) {
    for (int c = 0; c < 256; c++) plain_char[c] = (c >= 0x20 && c < 0x80 && c != '"' && c != '\\');
    static const char *keys[N_TEXT] = {"alt", "title", "data-image-title"}; /* pool.TEXT_KEYS */
    for (int k = 0; k < N_TEXT; k++)
        if (!KEY_OBJ[k] && !(KEY_OBJ[k] = PyUnicode_InternFromString(keys[k]))) return -1;
    if (!ZERO_COUNTS && !(ZERO_COUNTS = Py_BuildValue("(iiiiii)", 0, 0, 0, 0, 0, 0))) return -1;
    return 0;
}
