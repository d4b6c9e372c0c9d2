"""Counting and balancing ~10M (pair, entry) rows: ours vs a straightforward np.unique + per-row random draw.

Competitors (same input, one process, interleaved, order rotated, medians):
  baseline: upstream's offline numpy shape (metaclip-facts.md section 4), given the (entry_id, text_id) row array it
      stores: counts by ``np.unique(entry_ids, return_counts=True)`` scattered into a uint64 array,
      ``p = t / max(count, t)``, one ``np.random.random_sample`` per row, kept texts = ``np.unique(text_id[u < p])``.
  baseline, sort-unique: the same with the kept ids deduplicated by ``np.sort`` + neighbour mask. numpy 2.4's
      ``np.unique`` without ``return_*`` arguments is hash-based and 10-30x slower than sorting for ~10^6 distinct
      values (measured here), so this variant keeps the ratio honest.
  ours: `entry_counts` + `entry_probabilities` + `balance_pairs` (hash-seeded draws) on the CSR columns of
      `Matcher.match_batch` plus the pair ids: the compiled loops of `_balance_kernels` (numba), the default.
  ours, numpy passes: the same draws as numpy array passes (`balance_pairs_numpy`, counts by `np.bincount`), the
      previous default and the reference the compiled loop is tested against.
Exactness: counts identical across all; both forms of ours give the same kept set bit for bit; the kept counts of
the random baselines are checked against the closed-form expectation (`expected_kept`) within 6 sigma.

Usage: .venv/bin/python bench/bench_balancing.py [--rows 10000000] [--rounds 5] [--record]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from metaclip_assets.curation.balancing import (  # noqa: E402
    balance_pairs,
    balance_pairs_numpy,
    entry_counts,
    entry_probabilities,
    keep_probability,
)


def make_rows(num_rows: int, num_entries: int, seed: int = 0, zipf_a: float = 1.4):
    """CSR (offsets, entry_ids uint32) with unique ascending ids per text, plus random uint64 pair ids.

    ~9 entries per text; entry popularity Zipf(1.4) over a random permutation of the ids (performance.md section 3).
    """
    rng = np.random.default_rng(seed)
    n_texts = int(num_rows / 5.0) + 1
    lengths = 1 + rng.poisson(8.0, n_texts)
    perm = rng.permutation(num_entries).astype(np.uint64)
    ids = perm[(rng.zipf(zipf_a, int(lengths.sum())) - 1) % num_entries]
    rows = np.repeat(np.arange(n_texts, dtype=np.uint64), lengths)
    key = (rows << np.uint64(32)) | ids
    key.sort()
    key = key[np.concatenate(([True], key[1:] != key[:-1]))]  # a text lists each entry once, as match_batch does
    rows = (key >> np.uint64(32)).astype(np.int64)
    counts = np.bincount(rows, minlength=n_texts)
    cut = int(np.searchsorted(np.cumsum(counts), num_rows, side="right"))  # whole texts, <= num_rows rows
    counts = counts[:cut]
    offsets = np.zeros(cut + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    entry_ids = (key[: offsets[-1]] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    pair_ids = rng.integers(0, 2**64, cut, dtype=np.uint64, endpoint=False)
    return offsets, entry_ids, pair_ids


def baseline(inverted: np.ndarray, num_entries: int, t: float, unique_kept=np.unique):
    """Upstream-style: inverted is the (n, 2) uint32 array of [entry_id, text_id] rows."""
    eids, tids = inverted[:, 0], inverted[:, 1]
    uniq, cnt = np.unique(eids, return_counts=True)
    counts = np.zeros(num_entries, dtype=np.uint64)
    counts[uniq] = cnt
    p = t / np.maximum(counts, t)
    u = np.random.random_sample(len(eids))
    return counts, unique_kept(tids[u < p[eids]])


def sort_unique(x: np.ndarray) -> np.ndarray:
    x = np.sort(x)
    return x[np.concatenate(([True], x[1:] != x[:-1]))] if len(x) else x


def numpy_counts(entry_ids, num_entries):
    return np.bincount(entry_ids, minlength=num_entries).astype(np.uint64)


def ours(offsets, entry_ids, pair_ids, num_entries, t, seed=0, balance=balance_pairs, counter=entry_counts):
    counts = counter(entry_ids, num_entries)
    keep = balance(pair_ids, offsets, entry_ids, entry_probabilities(counts, t), seed)
    return counts, keep


def main(argv: list[str] | None = None) -> None:
    ap = C.parser(__doc__, rounds=5)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--t", type=float, default=20.0)
    args = ap.parse_args(argv)
    info = C.machine_info()
    print(info)
    offsets, entry_ids, pair_ids = make_rows(args.rows, args.entries, args.seed)
    n_rows, n_texts, E, t = len(entry_ids), len(pair_ids), args.entries, args.t
    inverted = np.stack([entry_ids, np.repeat(np.arange(n_texts, dtype=np.uint32), np.diff(offsets))], axis=1)
    print(f"{n_rows:,} (pair, entry) rows, {n_texts:,} pairs, {E:,} entries, t={t:g}")

    # ---- exactness -------------------------------------------------------------------------------------------
    np.random.seed(args.seed)
    ours(
        offsets[:2], entry_ids[: offsets[1]], pair_ids[:1], E, t
    )  # compile (or load the cached compile) before anything is timed
    c_ours, keep = ours(offsets, entry_ids, pair_ids, E, t)
    c_np, keep_np = ours(offsets, entry_ids, pair_ids, E, t, balance=balance_pairs_numpy, counter=numpy_counts)
    c_base, kept_base = baseline(inverted, E, t)
    _, kept_base2 = baseline(inverted, E, t, sort_unique)
    assert np.array_equal(c_ours, c_base) and np.array_equal(c_ours, c_np) and c_ours.dtype == np.uint64
    assert np.array_equal(keep, keep_np), "the compiled and the numpy balancing disagree"
    p = entry_probabilities(c_ours, t)
    kp = keep_probability(offsets, entry_ids, p)
    mean, sd = float(kp.sum()), float(np.sqrt((kp * (1 - kp)).sum()))
    for label, k in (
        ("ours", int(keep.sum())),
        ("baseline", len(kept_base)),
        ("baseline sort-unique", len(kept_base2)),
    ):
        assert abs(k - mean) < 6 * sd + 1, f"{label}: kept {k} vs expected {mean:.0f} +- {sd:.0f}"
    print(
        f"exactness: counts identical; compiled == numpy passes on all {n_texts:,} pairs; kept {int(keep.sum()):,} "
        f"(ours), {len(kept_base):,} (baseline), expected {mean:,.0f} +- {sd:.0f}"
    )

    competitors = {
        "baseline: np.unique counts + np.random + np.unique kept": lambda: baseline(inverted, E, t),
        "baseline, sort-unique for kept ids": lambda: baseline(inverted, E, t, sort_unique),
        "ours: compiled counts + hash-seeded balance_pairs (numba)": lambda: ours(offsets, entry_ids, pair_ids, E, t),
        "ours, numpy passes (balance_pairs_numpy, bincount)": lambda: ours(
            offsets, entry_ids, pair_ids, E, t, balance=balance_pairs_numpy, counter=numpy_counts
        ),
    }
    times, loads = C.interleaved(competitors, args.rounds)
    med = {k: C.median(v) for k, v in times.items()}
    cpu = {k: C.median(v) for k, v in times.cpu.items()}
    B0, B1 = list(med)[:2]
    rows = [
        [k, f"{v:.3f}", f"{cpu[k]:.3f}", C.rate(n_rows, v), f"{med[B0] / v:.2f}x", f"{med[B1] / v:.2f}x"]
        for k, v in med.items()
    ]
    table = C.md_table(
        ["competitor", "median wall s", "median CPU s", "rows/s", "vs baseline", "vs sort-unique baseline"], rows
    )
    ours_name, np_name = list(med)[2:]
    body = (
        f"{n_rows:,} (pair, entry) rows, {n_texts:,} pairs, {E:,} entries, Zipf 1.4, t={t:g}, "
        f"{int(keep.sum()) / n_texts:.0%} of pairs kept; {args.rounds} rounds; numpy {np.__version__}, 1 thread.\n\n"
        + table
        + "\n\nTarget ours >= 4x baseline: "
        + f"{med[B0] / med[ours_name]:.2f}x ({'met' if med[B0] / med[ours_name] >= 4 else 'MISSED'}); "
        + f"vs the sort-unique baseline {med[B1] / med[ours_name]:.2f}x; numpy passes "
        + f"{med[B0] / med[np_name]:.2f}x / {med[B1] / med[np_name]:.2f}x (same kept set as ours: checked).\n"
    )
    C.report("Counting and balancing", info, body, loads, args.record)


if __name__ == "__main__":
    main()
