/* Pool image uuids: crawl/pool.py's image_uuid (the first 24 hex digits of sha224(url)) for a whole PoolColumns in
 * one call, SHA-224 from OpenSSL's libcrypto (EVP). Pair ids (blake2b-64) come from hashlib in crawl/pool.py: the
 * issue 13 rule keeps a hand-written hash only where the library is too slow for the path, and hashlib's BLAKE2b
 * costs ~1% of the end-to-end CPU over the C one that was here (bench/bench_ids.py, README.md beside this file).
 * Checked against hashlib in metaclip_assets_tests/_native/test_kernels.py. */
#include "kernels.h"

#include <openssl/evp.h>

static EVP_MD *sha224_md; /* fetched once at import (ids_init) */

/* The first 24 hex digits of sha224(p[0:len]) into out[24], on a context the caller reuses; 0 on failure. */
static int sha224_hex24(EVP_MD_CTX *ctx, const unsigned char *p, size_t len, char out[24]) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    if (!EVP_DigestInit_ex2(ctx, sha224_md, NULL) || !EVP_DigestUpdate(ctx, p, len) || !EVP_DigestFinal_ex(ctx, d, &dl))
        return 0;
    static const char HEX[] = "0123456789abcdef";
    for (int i = 0; i < 12; i++) {
        out[2 * i] = HEX[d[i] >> 4];
        out[2 * i + 1] = HEX[d[i] & 15];
    }
    return 1;
}

KERNEL_DOC(image_uuids_doc,
"image_uuids(urls: list[str]) -> list[str]\n\n"
"pool.image_uuid per row (the first 24 hex digits of sha224(url)); a URL equal to the previous row's is hashed once.");

KERNEL_API PyObject *py_image_uuids(PyObject *self, PyObject *urls) {
    (void)self;
    if (!PyList_Check(urls)) {
        PyErr_SetString(PyExc_TypeError, "urls must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(urls);
    PyObject *uuids = PyList_New(n);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new(); /* one context for the whole call: re-initialised per URL */
    if (!uuids) goto fail;
    if (!ctx) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject *prev_url = NULL, *prev_uuid = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *u = PyList_GET_ITEM(urls, i), *uuid;
        if (!PyUnicode_Check(u)) {
            PyErr_SetString(PyExc_TypeError, "urls must be str");
            goto fail;
        }
        if (prev_url && (u == prev_url || PyUnicode_Compare(u, prev_url) == 0)) {
            uuid = Py_NewRef(prev_uuid);
        } else {
            Py_ssize_t ul;
            const char *us = PyUnicode_AsUTF8AndSize(u, &ul);
            char hex[24];
            if (!us) goto fail;
            if (!sha224_hex24(ctx, (const unsigned char *)us, (size_t)ul, hex)) {
                PyErr_SetString(PyExc_RuntimeError, "libcrypto's SHA-224 failed");
                goto fail;
            }
            if (!(uuid = PyUnicode_FromStringAndSize(hex, 24))) goto fail;
        }
        PyList_SET_ITEM(uuids, i, uuid);
        prev_url = u;
        prev_uuid = uuid;
    }
    EVP_MD_CTX_free(ctx);
    return uuids;
fail:
    EVP_MD_CTX_free(ctx);
    Py_XDECREF(uuids);
    return NULL;
}

KERNEL_API int ids_init(void) {
    /* Fetched once: EVP_MD_fetch is a locked provider lookup, too slow per call. Kept for the process's life. */
    if (!sha224_md && !(sha224_md = EVP_MD_fetch(NULL, "SHA224", NULL))) {
        PyErr_SetString(PyExc_ImportError, "libcrypto offers no SHA224 (EVP_MD_fetch failed)");
        return -1;
    }
    return 0;
}
