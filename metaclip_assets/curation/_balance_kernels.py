"""Compiled loops for counting and balancing (numba): one pass over the (pair, entry) rows instead of ~15 numpy passes.

The numpy forms in `balancing.py` stay the reference; these compute bit-identical results (test_balancing.py checks
both against `pair_entry_uniforms`). Why numba: the hashed draw is ~8 dependent integer ops per row, and as numpy
array passes each op re-reads 8 bytes per row from memory; a compiled loop keeps the row in registers, gathers the
entry threshold once, and stops at a pair's first successful draw (bench/RESULTS.md: 4x the numpy baseline).
Callers validate inputs: the loops do no bounds checks. ``cache=True`` keeps the ~3 s compile out of later processes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)  # the threshold of p = 1 (`balancing._keep_thresholds`)


@njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _mix(z):
    # splitmix64 finaliser, as `balancing._mix64` (uint64 arithmetic wraps in both)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


@njit(cache=True, nogil=True, boundscheck=False)
def count_entries32(entry_ids, num_entries):
    """uint32 count per entry id (callers check len(entry_ids) < 2**32 and the id range): a 2 MB table for 500k
    entries stays in cache, which makes the random increments ~15% faster than with uint64."""
    counts = np.zeros(num_entries, np.uint32)
    for i in range(entry_ids.shape[0]):
        counts[entry_ids[i]] += np.uint32(1)
    return counts


@njit(cache=True, nogil=True, boundscheck=False)
def balance_rows(pair_ids, offsets, entry_ids, thresholds, mixed_seed):
    """Keep mask: pair k is kept iff ``mix(mix(pair_id ^ s) + (e + 1) * GAMMA) <= thresholds[e]`` for some entry e of
    its CSR row. A threshold of all ones (p = 1) keeps without hashing; the first success ends the pair."""
    n = pair_ids.shape[0]
    keep = np.zeros(n, np.bool_)
    for k in range(n):
        h1 = _mix(pair_ids[k] ^ mixed_seed)
        for j in range(offsets[k], offsets[k + 1]):
            e = entry_ids[j]
            thr = thresholds[e]
            if thr == _ALL_ONES or _mix(h1 + (np.uint64(e) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)) <= thr:
                keep[k] = True
                break
    return keep
