/* metaclip_assets._native._kernels: the method table and module init. One file per kernel (wat_rows.c, ids.c,
 * token_match.c); what each computes, its Python reference, its tests and its benchmark: README.md beside this
 * file. */
#include "kernels.h"

static PyMethodDef methods[] = {
    {"rows", py_rows, METH_VARARGS, rows_doc},
    {"member", py_member, METH_VARARGS, member_doc},
    {"resolve", py_resolve, METH_VARARGS, resolve_doc},
    {"strip", py_strip, METH_O, strip_doc},
    {"page_parts", py_page_parts, METH_O, page_parts_doc},
    {"image_uuids", py_image_uuids, METH_O, image_uuids_doc},
    {"token_table", py_token_table, METH_VARARGS, token_table_doc},
    {"token_match", py_token_match, METH_VARARGS, token_match_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_kernels",
    .m_doc = "Compiled kernels of the curation hot paths (see metaclip_assets/_native/README.md).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    if (wat_rows_init() < 0 || ids_init() < 0) return NULL;
    return PyModule_Create(&moduledef);
}
