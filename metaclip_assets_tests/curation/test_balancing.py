"""MetaCLIP balancing: counts, probabilities, the hashed sampler's determinism and its agreement with the closed form."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from metaclip_assets.curation.balancing import (
    balance_pairs,
    balance_pairs_numpy,
    balance_sampling,
    entry_counts,
    entry_probabilities,
    expected_kept,
    keep_probability,
    pair_entry_uniforms,
    tail_share,
)
from metaclip_assets.curation.matching import Matcher

MASK64 = 2**64 - 1


def _mix_py(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uniform_py(pair_id: int, entry_id: int, seed: int) -> float:
    """The formula documented in pair_entry_uniforms, in plain Python integers."""
    s = _mix_py(seed ^ 0x6D6574615F636C70)
    h = _mix_py(pair_id ^ s)
    h = _mix_py((h + (entry_id + 1) * 0x9E3779B97F4A7C15) & MASK64)
    return (h >> 11) / 2**53


def synthetic_pool(n: int, num_entries: int, seed: int):
    """CSR matches with Zipf-like entry popularity, 0-6 distinct sorted entries per pair, random 64-bit pair ids."""
    rng = np.random.default_rng(seed)
    lengths = rng.choice(7, size=n, p=[0.05, 0.3, 0.25, 0.18, 0.12, 0.06, 0.04])
    raw = np.minimum(rng.zipf(1.4, size=int(lengths.sum())) - 1, num_entries - 1)
    rows = np.repeat(np.arange(n), lengths)
    # Distinct ids per row, sorted, as match_batch guarantees.
    pairs = np.unique(np.stack([rows, raw], axis=1), axis=0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n), out=offsets[1:])
    entry_ids = pairs[:, 1].astype(np.uint32)
    pair_ids = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    return pair_ids, offsets, entry_ids


def take_rows(offsets, entry_ids, rows):
    """CSR of the selected rows, in the given order."""
    lengths = np.diff(offsets)[rows]
    new_off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_off[1:])
    items = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows]) if len(rows) else np.array([], int)
    return new_off, entry_ids[items.astype(np.int64)]


# ---- counts and probabilities ---------------------------------------------------------------------------------------


def test_entry_counts_dtype_and_values():
    counts = entry_counts(np.array([0, 2, 2, 4, 2], dtype=np.uint32), 6)
    assert counts.dtype == np.uint64
    assert counts.tolist() == [1, 0, 3, 0, 1, 0]
    assert entry_counts(np.array([], dtype=np.uint32), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        entry_counts(np.array([3], dtype=np.uint32), 3)


def test_entry_counts_count_texts_from_match_batch():
    md = ["dog", "hot dog", "cat", "bird"]
    texts = ["hot dog dog dog", "dog", "cat, cat", "nothing", "hot dog"]
    offsets, ids = Matcher(md).match_batch(texts)
    counts = entry_counts(ids, len(md))
    expected = [sum(1 for t in texts if f" {e} " in f" {t.replace(',', ' , ')} ") for e in md]
    assert counts.tolist() == expected == [3, 2, 1, 0]


def test_entry_probabilities_formula():
    counts = np.array([0, 1, 19_999, 20_000, 20_001, 40_000, 10**12], dtype=np.uint64)
    p = entry_probabilities(counts, 20_000)
    assert p.dtype == np.float64
    assert p[:4].tolist() == [1.0, 1.0, 1.0, 1.0]  # tail (and the boundary) keep everything
    assert p[4] == 20_000 / 20_001 and p[5] == 0.5 and p[6] == 20_000 / 10**12
    assert entry_probabilities(counts, math.inf).tolist() == [1.0] * len(counts)
    assert entry_probabilities(counts, 0.5)[1] == 0.5  # fractional t is allowed: t / max(c, t)
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError):
            entry_probabilities(counts, bad)


def test_tail_share():
    counts = np.array([5, 10, 100, 0, 1000], dtype=np.uint64)
    assert tail_share(counts, 100) == 15 / 1115
    assert tail_share(counts, math.inf) == 1.0
    assert tail_share(counts, 1) == 0.0
    assert tail_share(np.zeros(3, dtype=np.uint64), 10) == 0.0


# ---- hashed uniforms --------------------------------------------------------------------------------------------------


def test_uniforms_follow_documented_formula():
    rng = random.Random(3)
    pids = [0, 1, MASK64, 2**63] + [rng.getrandbits(64) for _ in range(300)]
    eids = [0, 499_999, 2**32 - 1, 7] + [rng.randrange(2**32) for _ in range(300)]
    pid_arr, eid_arr = np.array(pids, dtype=np.uint64), np.array(eids, dtype=np.uint32)
    for seed in (0, 1, 2**64 - 1):
        got = pair_entry_uniforms(pid_arr, eid_arr, seed)
        assert got.tolist() == [uniform_py(p, e, seed) for p, e in zip(pids, eids)]
    assert pid_arr.tolist() == pids and eid_arr.tolist() == eids  # the in-place mixing never touches the inputs
    with pytest.raises(ValueError):
        pair_entry_uniforms(np.array([1], dtype=np.uint64), np.array([1], dtype=np.uint32), -1)


def test_uniforms_are_uniform_and_decorrelated():
    n = 1_000_000
    pids = np.repeat(np.arange(n // 4, dtype=np.uint64), 4)  # consecutive ids: the worst case for a weak mix
    eids = np.tile(np.arange(4, dtype=np.uint32), n // 4)
    u = pair_entry_uniforms(pids, eids, seed=0)
    assert u.min() >= 0.0 and u.max() < 1.0
    hist = np.bincount((u * 32).astype(np.int64), minlength=32)
    sd = math.sqrt(n / 32 * (1 - 1 / 32))
    assert np.all(np.abs(hist - n / 32) < 5 * sd)
    # Draws of the same pair for different entries, and across seeds, are uncorrelated (|r| ~ 1/sqrt(n/4) = 0.002).
    grid = u.reshape(-1, 4)
    assert abs(np.corrcoef(grid[:, 0], grid[:, 1])[0, 1]) < 0.01
    assert abs(np.corrcoef(u, pair_entry_uniforms(pids, eids, seed=1))[0, 1]) < 0.01


# ---- sampler ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool():
    pair_ids, offsets, entry_ids = synthetic_pool(200_000, 50_000, seed=11)
    counts = entry_counts(entry_ids, 50_000)
    return pair_ids, offsets, entry_ids, counts


def test_realised_keep_rate_matches_closed_form(pool):
    pair_ids, offsets, entry_ids, counts = pool
    prob = entry_probabilities(counts, 200)
    q = keep_probability(offsets, entry_ids, prob)
    mu = expected_kept(offsets, entry_ids, prob)
    assert mu == pytest.approx(q.sum())
    sigma = math.sqrt(float((q * (1 - q)).sum()))
    assert sigma > 50  # the test has teeth: plenty of pairs are genuinely random
    for seed in (0, 1, 2):
        kept = int(balance_pairs(pair_ids, offsets, entry_ids, prob, seed=seed).sum())
        assert abs(kept - mu) < 4 * sigma, (seed, kept, mu, sigma)
    # Same check restricted to head-only pairs (all p < 1), where every decision is random.
    head_only = q < 1
    kept_mask = balance_pairs(pair_ids, offsets, entry_ids, prob, seed=5)
    sig_h = math.sqrt(float((q[head_only] * (1 - q[head_only])).sum()))
    assert abs(int(kept_mask[head_only].sum()) - q[head_only].sum()) < 4 * sig_h


def test_keep_probability_closed_form_small():
    prob = np.array([1.0, 0.5, 0.25, 0.1])
    offsets = np.array([0, 0, 1, 3, 5])
    entry_ids = np.array([1, 1, 2, 0, 3], dtype=np.uint32)
    q = keep_probability(offsets, entry_ids, prob)
    assert q.tolist() == pytest.approx([0.0, 0.5, 1 - 0.5 * 0.75, 1.0])
    assert q[3] == 1.0  # p = 1 gives exactly 1 despite log1p(-1) = -inf
    assert expected_kept(offsets, entry_ids, prob) == pytest.approx(q.sum())


def test_independent_of_order_and_sharding(pool):
    pair_ids, offsets, entry_ids, counts = pool
    prob = entry_probabilities(counts, 200)
    kept = set(pair_ids[balance_pairs(pair_ids, offsets, entry_ids, prob, seed=3)].tolist())
    n = len(pair_ids)
    perm = np.random.default_rng(0).permutation(n)
    sharded: set[int] = set()
    for rows in np.array_split(perm, 4):
        off, eids = take_rows(offsets, entry_ids, rows)
        mask = balance_pairs(pair_ids[rows], off, eids, prob, seed=3)
        sharded |= set(pair_ids[rows][mask].tolist())
    assert sharded == kept
    other = set(pair_ids[balance_pairs(pair_ids, offsets, entry_ids, prob, seed=4)].tolist())
    assert other != kept  # the seed matters


def test_single_and_batch_agree(pool):
    pair_ids, offsets, entry_ids, counts = pool
    prob = entry_probabilities(counts, 200)
    mask = balance_pairs(pair_ids, offsets, entry_ids, prob, seed=9)
    for k in range(0, len(pair_ids), 97):
        ids = entry_ids[offsets[k] : offsets[k + 1]]
        assert balance_sampling(ids, prob, pair_id=int(pair_ids[k]), seed=9) == mask[k]


@pytest.mark.parametrize("t", [1, 30, 200, 5000, math.inf])
@pytest.mark.parametrize("seed", [0, 7, 2**64 - 1])
def test_compiled_kernel_equals_numpy_and_python_formula(pool, t, seed):
    """The numba loop (early exit, p = 1 shortcut) against the numpy passes and, on a sample of pairs, against the
    documented formula evaluated in Python integers."""
    pair_ids, offsets, entry_ids, counts = pool
    prob = entry_probabilities(counts, t)
    mask = balance_pairs(pair_ids, offsets, entry_ids, prob, seed=seed)
    assert mask.dtype == np.bool_ and mask.shape == pair_ids.shape
    assert np.array_equal(mask, balance_pairs_numpy(pair_ids, offsets, entry_ids, prob, seed=seed))
    for k in range(0, len(pair_ids), 53):
        ids = entry_ids[offsets[k] : offsets[k + 1]].tolist()
        expected = any(uniform_py(int(pair_ids[k]), e, seed) < prob[e] for e in ids)
        assert mask[k] == expected
    # other integer dtypes and non-contiguous inputs give the same mask
    assert np.array_equal(
        mask,
        balance_pairs(
            pair_ids.astype(np.int64).view(np.uint64), list(offsets), entry_ids.astype(np.int64), prob, seed=seed
        ),
    )


def test_compiled_kernel_edge_probabilities():
    """Thresholds at the extremes of (0, 1] (1e-12, 2**-53, 1 - 2**-53, 1) and the largest seed."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 6, 3000)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    eids = rng.integers(0, 50, int(offsets[-1])).astype(np.uint32)
    pids = rng.integers(0, 2**64, len(lengths), dtype=np.uint64)
    prob = np.concatenate(([1.0, 1e-12, 0.5, 2.0**-53, 1 - 2.0**-53], rng.random(45) * 0.3 + 1e-9))
    for seed in (0, 7, 2**64 - 1):
        assert np.array_equal(
            balance_pairs(pids, offsets, eids, prob, seed), balance_pairs_numpy(pids, offsets, eids, prob, seed)
        )


def test_entry_counts_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="entry ids must lie"):
        entry_counts(np.array([0, 3], dtype=np.uint32), 3)
    with pytest.raises(ValueError, match="entry ids must lie"):
        entry_counts(np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match="entry ids must lie"):  # the compiled loop would write out of bounds
        balance_pairs(np.array([1], dtype=np.uint64), np.array([0, 1]), np.array([5], dtype=np.uint32), np.ones(3))


def test_tail_entry_always_kept(pool):
    pair_ids, offsets, entry_ids, counts = pool
    t = 200
    prob = entry_probabilities(counts, t)
    rows = np.repeat(np.arange(len(pair_ids)), np.diff(offsets))
    has_tail = np.zeros(len(pair_ids), dtype=bool)
    has_tail[rows[counts[entry_ids] < t]] = True
    assert 1000 < has_tail.sum() < len(pair_ids)
    for seed in range(3):
        assert balance_pairs(pair_ids, offsets, entry_ids, prob, seed=seed)[has_tail].all()


def test_head_only_entries_cut():
    # Two very common entries: with t tiny relative to their counts, their pairs are almost all dropped.
    n = 50_000
    entry_ids = np.tile(np.array([0, 1], dtype=np.uint32), n)
    offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    pair_ids = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    counts = entry_counts(entry_ids, 2)
    prob = entry_probabilities(counts, 500)  # p = 0.01 for both
    kept = balance_pairs(pair_ids, offsets, entry_ids, prob)
    q = 1 - 0.99**2
    assert abs(kept.sum() - n * q) < 4 * math.sqrt(n * q * (1 - q))
    assert not balance_pairs(pair_ids, offsets, entry_ids, entry_probabilities(counts, 1e-12)).any()
    assert balance_pairs(pair_ids, offsets, entry_ids, entry_probabilities(counts, math.inf)).all()


def test_zero_match_pairs_never_kept():
    offsets = np.array([0, 0, 1, 1], dtype=np.int64)
    entry_ids = np.array([0], dtype=np.uint32)
    prob = np.ones(1)
    kept = balance_pairs(np.array([5, 6, 7], dtype=np.uint64), offsets, entry_ids, prob)
    assert kept.tolist() == [False, True, False]
    assert balance_sampling([], prob, pair_id=5) is False
    empty = balance_pairs(np.array([], dtype=np.uint64), np.array([0]), np.array([], dtype=np.uint32), prob)
    assert empty.shape == (0,) and empty.dtype == bool


def test_balance_pairs_rejects_bad_csr():
    prob = np.ones(3)
    with pytest.raises(ValueError):
        balance_pairs(np.array([1, 2], dtype=np.uint64), np.array([0, 2]), np.array([0, 1], dtype=np.uint32), prob)
    with pytest.raises(ValueError):
        balance_pairs(np.array([1], dtype=np.uint64), np.array([0, 1]), np.array([0, 1], dtype=np.uint32), prob)


def test_balance_sampling_needs_pair_id_or_rng():
    prob = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="deterministic"):
        balance_sampling([0, 1], prob)
    with pytest.raises(ValueError):
        balance_sampling([0, 1], prob, pair_id=1, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        balance_sampling([2], prob, pair_id=1)


def test_balance_sampling_with_rng_like_upstream():
    prob = np.array([1.0, 0.3, 0.0])
    assert balance_sampling([2, 0], prob, rng=np.random.default_rng(0)) is True
    assert balance_sampling([2], prob, rng=np.random.default_rng(0)) is False
    # Upstream order: one draw per entry until the first success.
    draws = np.random.default_rng(42).random(2)
    expect = bool(draws[0] < 0.3 or draws[1] < 0.3)
    assert balance_sampling([1, 1], prob, rng=np.random.default_rng(42)) is expect
    rng = np.random.default_rng(1)
    rate = np.mean([balance_sampling([1, 1], prob, rng=rng) for _ in range(20_000)])
    q = 1 - 0.7**2
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / 20_000)
