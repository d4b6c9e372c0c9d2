"""MetaCLIP balancing: entry counts, per-entry keep probabilities and a deterministic, sharding-independent sampler.

Semantics (metaclip-facts.md section 4): ``count[e]`` = number of texts whose match list contains ``e``;
``p[e] = t / max(count[e], t)``; a text is kept iff, for at least one matched entry, an independent uniform draw is
``< p[e]``, so ``P(keep) = 1 - prod_e (1 - p[e])`` and any tail entry (count < t) keeps the text.

Upstream draws from an unseeded RNG stream, so results change with every run and with the order and sharding of the
pool. Here each (pair, entry) draw is a pure function of ``(pair_id, entry_id, seed)`` (see `pair_entry_uniforms`):
the curated set is the same whichever order, chunking or process the pairs are balanced in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metaclip_assets.curation import _balance_kernels as _kernels

__all__ = [
    "entry_counts",
    "entry_probabilities",
    "pair_entry_uniforms",
    "balance_pairs",
    "balance_pairs_numpy",
    "balance_sampling",
    "keep_probability",
    "expected_kept",
    "tail_share",
]


def entry_counts(entry_ids: np.ndarray, num_entries: int) -> np.ndarray:
    """uint64 count per entry id; ``entry_ids`` must already hold each id at most once per text (as `match_batch`
    produces), so the count is the number of texts matching the entry."""
    ids = _entry_id_array(entry_ids, num_entries)
    if len(ids) < 2**32:  # uint32 counters cannot overflow; widen to uint64 as upstream does "to be safe for scaling"
        return _kernels.count_entries32(ids, num_entries).astype(np.uint64)
    return np.bincount(ids, minlength=num_entries).astype(np.uint64)


def _entry_id_array(entry_ids: np.ndarray, num_entries: int) -> np.ndarray:
    """Contiguous uint32 ids, range-checked (the compiled loops index without bounds checks)."""
    ids = np.asarray(entry_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= num_entries):
        raise ValueError(f"entry ids must lie in [0, {num_entries})")
    if num_entries > 2**32:
        raise ValueError(f"at most 2**32 entries are supported, got {num_entries}")
    return np.ascontiguousarray(ids, dtype=np.uint32)


def entry_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """``p[e] = t / max(count[e], t)`` as float64: 1 for tail entries (count < t), ``t / count`` for head entries.

    ``t = inf`` (upstream's ``max_match="inf"``) gives all ones, i.e. every matched text is kept.
    """
    t = float(t)
    if not t > 0:  # also rejects NaN
        raise ValueError(f"t must be > 0, got {t}")
    c = np.asarray(counts)
    if np.isinf(t):
        return np.ones(c.shape, dtype=np.float64)  # inf / max(c, inf) would be NaN
    return t / np.maximum(c.astype(np.float64), t)


# splitmix64 constants (Steele, Lea & Flood 2014; the finaliser is Stafford's "Mix13").
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0x6D6574615F636C70)  # b"meta_clp": keeps seed 0 away from the all-zero state


def _mix64(z: np.ndarray) -> np.ndarray:
    # In place on a caller-owned array: this runs over every (pair, entry) item, and temporaries dominate its cost.
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _mixed_seed(seed: int) -> np.uint64:
    """``s = mix(seed ^ SALT)`` of the draw formula, for a seed in [0, 2**64)."""
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError("seed must be in [0, 2**64)")
    with np.errstate(over="ignore"):  # wraparound is intended
        return _mix64(np.array([seed], dtype=np.uint64) ^ _SEED_SALT)[0]


def pair_entry_uniforms(pair_ids: np.ndarray, entry_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """One uniform draw in [0, 1) per (pair, entry), a pure function of ``(pair_id, entry_id, seed)``.

    The curated set depends on this exact formula; all arithmetic is uint64 modulo 2**64::

        mix(z)  = splitmix64 finaliser: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27;
                  z *= 0x94D049BB133111EB; z ^= z >> 31
        s       = mix(seed ^ 0x6D6574615F636C70)
        h       = mix(pair_id ^ s)
        h       = mix(h + (entry_id + 1) * 0x9E3779B97F4A7C15)
        u       = (h >> 11) / 2**53

    Two full mixing rounds decorrelate draws of the same pair across entries and of the same entry across pairs
    (pair ids are themselves blake2b hashes, but nothing here relies on that).
    """
    s = _mixed_seed(seed)
    p = np.asarray(pair_ids, dtype=np.uint64)
    e = np.asarray(entry_ids, dtype=np.uint64)
    if p.shape != e.shape:
        raise ValueError(f"pair_ids {p.shape} and entry_ids {e.shape} must have the same shape")
    with np.errstate(over="ignore"):  # wraparound is intended
        h = _mix64(p ^ s)  # p ^ s is a fresh array, safe to mix in place
        k = e + np.uint64(1)
        k *= _GAMMA
        h += k
        h = _mix64(h)
        h >>= np.uint64(11)
    u = h.astype(np.float64)
    u *= 1.0 / 2**53
    return u


def _check_csr(offsets: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    off = np.asarray(offsets, dtype=np.int64)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != len(entry_ids) or np.any(np.diff(off) < 0):
        raise ValueError("offsets must be non-decreasing, start at 0 and end at len(entry_ids)")
    return off


def _rows(off: np.ndarray) -> np.ndarray:
    # Row (text) index of every (text, entry) item of the CSR layout.
    return np.repeat(np.arange(len(off) - 1, dtype=np.int64), np.diff(off))


_CHUNK = 1 << 20  # rows per step of balance_pairs: 8 MB uint64 arrays stay in cache across the ~15 passes


def _mix_inplace(z: np.ndarray, tmp: np.ndarray) -> None:
    # `_mix64` without temporaries: the shifts go to a caller-owned scratch buffer.
    for shift, mult in ((30, _M1), (27, _M2), (31, None)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        np.bitwise_xor(z, tmp, out=z)
        if mult is not None:
            np.multiply(z, mult, out=z)


def _keep_thresholds(prob: np.ndarray) -> np.ndarray:
    """uint64 ``(ceil(p * 2**53) << 11) - 1`` per entry: the draw ``u = (h >> 11) / 2**53`` is ``< p`` iff
    ``h <= thr``. For an integer x and a real y, x < y iff x < ceil(y); ``p * 2**53`` is exact in float64 (a power
    of two scaling) and ``1 <= ceil(p * 2**53) <= 2**53`` for ``0 < p <= 1``, so the comparison is bit-identical
    to the float one and needs no shift, conversion or multiply per row."""
    if prob.size and not (np.all(prob > 0) and np.all(prob <= 1)):
        raise ValueError("entry probabilities must lie in (0, 1]")
    with np.errstate(over="ignore"):
        return (np.ceil(prob * 2.0**53).astype(np.uint64) << np.uint64(11)) - np.uint64(1)


def _balance_inputs(pair_ids, offsets, entry_ids, entry_prob, seed):
    pids = np.ascontiguousarray(pair_ids, dtype=np.uint64)
    off = _check_csr(offsets, entry_ids)
    if len(pids) != len(off) - 1:
        raise ValueError(f"{len(pids)} pair ids but {len(off) - 1} rows in offsets")
    s = _mixed_seed(seed)
    thr = _keep_thresholds(np.asarray(entry_prob, dtype=np.float64))
    eids = _entry_id_array(entry_ids, len(thr))
    return pids, np.ascontiguousarray(off), eids, thr, s


def balance_pairs(
    pair_ids: np.ndarray,
    offsets: np.ndarray,
    entry_ids: np.ndarray,
    entry_prob: np.ndarray,
    seed: int = 0,
) -> np.ndarray:
    """Boolean keep mask (n,): pair k is kept iff some matched entry e has ``uniform(pair_k, e, seed) < p[e]``.

    ``offsets``/``entry_ids`` are the CSR columns of `Matcher.match_batch` for the n pairs. Pairs without matches are
    never kept. Each pair's outcome depends only on its own id, matches and the seed. The draws are exactly those of
    `pair_entry_uniforms`, compared as integers (`_keep_thresholds`), in one compiled pass over the rows
    (`_balance_kernels.balance_rows`); `balance_pairs_numpy` is the same computation in numpy.
    """
    pids, off, eids, thr, s = _balance_inputs(pair_ids, offsets, entry_ids, entry_prob, seed)
    return _kernels.balance_rows(pids, off, eids, thr, s)


def balance_pairs_numpy(
    pair_ids: np.ndarray,
    offsets: np.ndarray,
    entry_ids: np.ndarray,
    entry_prob: np.ndarray,
    seed: int = 0,
) -> np.ndarray:
    """`balance_pairs` in numpy array passes (the reference the compiled loop is tested against): the first mixing
    round once per pair, integer thresholds, rows in cache-sized chunks."""
    pids, off, eids, thr, s = _balance_inputs(pair_ids, offsets, entry_ids, entry_prob, seed)
    keep = np.zeros(len(pids), dtype=bool)
    n = len(eids)
    if n == 0:
        return keep
    with np.errstate(over="ignore"):  # wraparound is intended
        h1 = pids ^ s  # mix(pair_id ^ s): once per pair
        _mix_inplace(h1, np.empty_like(h1))
        kg = np.arange(1, len(thr) + 1, dtype=np.uint64) * _GAMMA  # (e + 1) * GAMMA per entry id
    rows_all = np.repeat(np.arange(len(pids), dtype=np.intp), np.diff(off))
    z = np.empty(min(n, _CHUNK), dtype=np.uint64)
    k, tmp = np.empty_like(z), np.empty_like(z)
    with np.errstate(over="ignore"):
        for a in range(0, n, _CHUNK):
            b = min(a + _CHUNK, n)
            rows, e = rows_all[a:b], eids[a:b].astype(np.intp)
            zz, kk, tt = z[: b - a], k[: b - a], tmp[: b - a]
            np.take(h1, rows, out=zz)
            np.take(kg, e, out=kk)
            np.add(zz, kk, out=zz)
            _mix_inplace(zz, tt)  # h = mix(h1 + (e + 1) * GAMMA)
            np.take(thr, e, out=kk)
            keep[rows[zz <= kk]] = True  # scatter is 3.4x np.unique of kept rows (performance.md section 3)
    return keep


def balance_sampling(
    matched_entry_ids: Sequence[int] | np.ndarray,
    entry_prob: np.ndarray,
    *,
    pair_id: int | None = None,
    seed: int = 0,
    rng: np.random.Generator | None = None,
) -> bool:
    """Keep decision for one text, shaped like MetaCLIP's ``balance_sampling(matched_entry_ids, entry_prob)``.

    With ``pair_id`` the draws are the hashed ones of `balance_pairs`, so both forms agree exactly. With ``rng`` the
    draws come from that generator in upstream's order (one per entry, stopping at the first success); the result
    then depends on how many draws came before, i.e. on order and sharding.
    """
    ids = np.asarray(matched_entry_ids, dtype=np.int64)
    prob = np.asarray(entry_prob, dtype=np.float64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(prob)):
        raise ValueError(f"entry ids must lie in [0, {len(prob)})")
    if pair_id is not None:
        if rng is not None:
            raise ValueError("pass either pair_id (hashed, deterministic draws) or rng, not both")
        u = pair_entry_uniforms(np.full(ids.shape, pair_id, dtype=np.uint64), ids.astype(np.uint64), seed)
        return bool(np.any(u < prob[ids]))
    if rng is None:
        raise ValueError(
            "balance_sampling needs pair_id (deterministic: the draw is a hash of pair_id, entry id and seed) or an "
            "explicit numpy Generator; upstream's unseeded global RNG made curated sets irreproducible"
        )
    for e in ids.tolist():
        if rng.random() < prob[e]:
            return True
    return False


def keep_probability(offsets: np.ndarray, entry_ids: np.ndarray, entry_prob: np.ndarray) -> np.ndarray:
    """Closed-form ``P(keep) = 1 - prod_e (1 - p[e])`` per text (float64, 0 for texts without matches)."""
    off = _check_csr(offsets, entry_ids)
    prob = np.asarray(entry_prob, dtype=np.float64)
    # Sum of logs instead of a product per row; p = 1 gives log1p(-1) = -inf and 1 - exp(-inf) = 1 exactly.
    with np.errstate(divide="ignore"):
        log_miss = np.log1p(-prob[np.asarray(entry_ids)])
    total = np.bincount(_rows(off), weights=log_miss, minlength=len(off) - 1)
    return -np.expm1(total)


def expected_kept(offsets: np.ndarray, entry_ids: np.ndarray, entry_prob: np.ndarray) -> float:
    """Expected number of kept texts, to report beside the realised subset size."""
    return float(keep_probability(offsets, entry_ids, entry_prob).sum())


def tail_share(counts: np.ndarray, t: float) -> float:
    """Share of all matches held by tail entries (count < t); 0.0 when there are no matches."""
    c = np.asarray(counts, dtype=np.uint64)
    total = int(c.sum())
    if total == 0:
        return 0.0
    return int(c[c < t].sum()) / total
