"""Compiled kernels of the hot paths (plain CPython C API, built by `pip install`); see README.md beside this file.

Each kernel has a Python reference it is tested against, and every caller falls back to that reference when the
extension is not built (`ImportError` here). Imports nothing from the rest of the package.
"""

from metaclip_assets._native._kernels import (
    image_uuids,
    member,
    page_parts,
    resolve,
    rows,
    strip,
    token_match,
    token_table,
)

__all__ = ["image_uuids", "member", "page_parts", "resolve", "rows", "strip", "token_match", "token_table"]
