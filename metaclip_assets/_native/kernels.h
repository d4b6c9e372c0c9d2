/* What the kernels of metaclip_assets._native._kernels share (private; see README.md beside this file):
 * a growable byte buffer, the two-list argument check, and each kernel's Python entry points and init, which
 * module.c puts in the one method table. Every kernel file includes this header first. */
#ifndef METACLIP_KERNELS_H
#define METACLIP_KERNELS_H

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE /* memmem */
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Symbols shared between the kernel files stay inside the extension's .so. */
#if defined(__GNUC__)
#define KERNEL_API __attribute__((visibility("hidden")))
#else
#define KERNEL_API
#endif

/* A docstring the method table in module.c refers to (PyDoc_STRVAR, but visible to the other files). */
#define KERNEL_DOC(name, str) KERNEL_API const char name[] = PyDoc_STR(str)

/* ---- growable byte arena (decoded strings, resolved URLs, result arrays) ---------------------- */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Arena;

static inline int arena_reserve(Arena *a, Py_ssize_t extra) {
    if (a->len + extra <= a->cap) return 0;
    Py_ssize_t cap = a->cap ? a->cap : 4096;
    while (cap < a->len + extra) cap *= 2;
    char *nb = (char *)realloc(a->buf, (size_t)cap);
    if (!nb) return -1;
    a->buf = nb;
    a->cap = cap;
    return 0;
}

static inline int out_put(Arena *o, const void *p, Py_ssize_t n) {
    if (n == 0) return 0; /* an empty arena has no buffer: memcpy(NULL, p, 0) is undefined */
    if (arena_reserve(o, n) < 0) return -1;
    memcpy(o->buf + o->len, p, (size_t)n);
    o->len += n;
    return 0;
}

/* Parse args as two lists of the same length (token_table()): the length, or -1 with an exception. */
static inline Py_ssize_t two_lists(PyObject *args, PyObject **a, PyObject **b, const char *names) {
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, a, &PyList_Type, b)) return -1;
    if (PyList_GET_SIZE(*a) != PyList_GET_SIZE(*b)) {
        PyErr_Format(PyExc_ValueError, "%s differ in length", names);
        return -1;
    }
    return PyList_GET_SIZE(*a);
}

/* ---- wat_rows.c: WAT member/payload -> pool rows, URL shortcuts, str.strip() ------------------- */

KERNEL_API int wat_rows_init(void); /* tables and interned objects; -1 with an exception */
KERNEL_API PyObject *py_rows(PyObject *self, PyObject *args);
KERNEL_API PyObject *py_member(PyObject *self, PyObject *args);
KERNEL_API PyObject *py_resolve(PyObject *self, PyObject *args);
KERNEL_API PyObject *py_strip(PyObject *self, PyObject *arg);
KERNEL_API PyObject *py_page_parts(PyObject *self, PyObject *arg);
extern KERNEL_API const char rows_doc[], member_doc[], resolve_doc[], strip_doc[], page_parts_doc[];

/* ---- ids.c: pool image uuids (libcrypto's sha224; pair ids come from hashlib in crawl/pool.py) --- */

KERNEL_API int ids_init(void); /* fetches libcrypto's SHA-224; -1 with ImportError */
KERNEL_API PyObject *py_image_uuids(PyObject *self, PyObject *urls);
extern KERNEL_API const char image_uuids_doc[];

/* ---- token_match.c: matching.Matcher's token-join engine --------------------------------------- */

KERNEL_API PyObject *py_token_table(PyObject *self, PyObject *args);
KERNEL_API PyObject *py_token_match(PyObject *self, PyObject *args);
extern KERNEL_API const char token_table_doc[], token_match_doc[];

#endif
