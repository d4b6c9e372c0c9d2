"""Prototype of a faster, exact `Matcher.match_batch` (proposed patch for metaclip_assets/curation/matching.py).

Same automaton (ahocorasick-rs, bytes, overlapping, MatchKind.Standard), same output byte for byte; what changes is
everything around the Rust scan, which profiling showed to be ~45% of `match_batch` on 500k entries:

1. Spacing in bulk: the rule is a per-character replacement plus one space of padding at both ends, so it commutes
   with concatenation. ``" " + " \\x00 ".join(texts) + " "`` gets the 10 replaces once (long C loops instead of
   10 `in` scans per text), is encoded once, and ``split(b"\\x00")`` yields exactly ``_encode(spacing(t))`` per text.
   Exact only if no text contains NUL: checked with one count, otherwise the per-text path is used.
2. No Python bytecode per text or per match: ``list(map(partial(find, overlapping=True), pieces))`` runs the
   calls from C, and the pattern ids are pulled out with ``np.fromiter(map(itemgetter(0), chain.from_iterable(...)))``.
3. Per-text dedup and ordering in numpy instead of one `set` + `sorted` per text: key = row << 32 | id, a stable
   sort (timsort: the keys arrive grouped by row, so it is nearly linear) and a neighbour mask.
   NOT ``np.unique``: in numpy 2.4 it takes ~2 s for 1.6M distinct uint64 keys (hash-based) vs 0.02-0.05 s for
   ``np.sort``.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from itertools import chain
from operator import itemgetter

import numpy as np

from metaclip_assets.curation.matching import Matcher, _encode, _no_cyclic_gc, spacing

_PUNCT = (",", ".", ";", ":", "?", "!", "`")
_WS = ("\t", "\n", "\r")
_first = itemgetter(0)


def spaced_bytes(texts: Sequence[str]) -> list[bytes]:
    """``[_encode(spacing(t)) for t in texts]``, computed on one joined string."""
    big = " " + " \x00 ".join(texts) + " "
    if big.count("\x00") != max(len(texts) - 1, 0):  # a text contains NUL: the split would be ambiguous
        return [_encode(spacing(t)) for t in texts]
    for c in _PUNCT:
        if c in big:
            big = big.replace(c, " " + c + " ")
    for c in _WS:
        if c in big:
            big = big.replace(c, " ")
    return _encode(big).split(b"\x00") if texts else []


def _group_csr(matcher: Matcher) -> tuple[np.ndarray, np.ndarray] | None:
    groups = matcher._unique_to_ids
    if groups is None:
        return None
    lens = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    off = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum(lens, out=off[1:])
    return off, np.fromiter(chain.from_iterable(groups), dtype=np.uint32, count=int(off[-1]))


def match_batch(matcher: Matcher, texts: Sequence[str], chunk_size: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Drop-in for ``matcher.match_batch(texts)``: CSR ``(offsets int64 (n+1,), entry_ids uint32)``, ids ascending."""
    n = len(texts)
    find = partial(matcher._ac.find_matches_as_indexes, overlapping=True)
    counts, found = [], []
    with _no_cyclic_gc():
        for s in range(0, n, chunk_size):  # chunks bound the memory held by match tuples
            res = list(map(find, spaced_bytes(texts[s : s + chunk_size])))
            c = np.fromiter(map(len, res), dtype=np.int64, count=len(res))
            counts.append(c)
            found.append(np.fromiter(map(_first, chain.from_iterable(res)), dtype=np.uint32, count=int(c.sum())))
            del res
    c = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    ids = np.concatenate(found) if found else np.zeros(0, dtype=np.uint32)
    rows = np.repeat(np.arange(n, dtype=np.uint64), c)
    gcsr = _group_csr(matcher)
    if gcsr is not None and len(ids):  # duplicated entries: each pattern index stands for several entry ids
        g_off, g_ids = gcsr
        lens = np.diff(g_off)[ids]
        starts = np.repeat(g_off[ids] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
        ids = g_ids[starts + np.arange(int(lens.sum()))]
        rows = np.repeat(rows, lens)
    key = (rows << np.uint64(32)) | ids.astype(np.uint64)
    key.sort(kind="stable")
    if len(key):
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    lengths = np.bincount((key >> np.uint64(32)).astype(np.intp), minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


_worker: Matcher | None = None


def _worker_match(chunk: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return match_batch(_worker, chunk)


def match_parallel(texts: Sequence[str], matcher: Matcher, workers: int = 2, chunk_size: int = 20_000):
    """`match_pool_parallel` with the proposed kernel in the workers (fork after build, results in chunk order)."""
    import multiprocessing

    global _worker
    chunks = [list(texts[i : i + chunk_size]) for i in range(0, len(texts), chunk_size)]
    _worker = matcher
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_worker_match, chunks, chunksize=1)
    finally:
        _worker = None
    lengths = np.concatenate([np.diff(o) for o, _ in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.concatenate([i for _, i in parts]).astype(np.uint32, copy=False)
