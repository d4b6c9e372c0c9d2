/* Token matcher: curation/matching.py's Matcher._token_hits (the token-join engine) as one open-addressing hash
 * table (token_table) probed per text (token_match), the GIL released for the lookups. */
#include "kernels.h"

/* Same algorithm as Matcher._token_hits (see its docstring): the spaced text is split at every space; entry e
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

KERNEL_DOC(token_table_doc,
"token_table(keys: list[str], values: list[int]) -> capsule\n\n"
"The join table of Matcher's token engine (key -> (u + 1) << 1 | grows), for token_match. Keys must be distinct\n"
"and valid UTF-8; values > 0.");

KERNEL_API PyObject *py_token_table(PyObject *self, PyObject *args) {
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

KERNEL_DOC(token_match_doc,
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

KERNEL_API PyObject *py_token_match(PyObject *self, PyObject *args) {
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
