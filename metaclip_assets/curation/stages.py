"""The curation stages on DataFrames: match a shard, merge a snapshot's shards, count, balance.

These functions are what `curation/steps.py` (the assets' work on storage) calls; they know nothing of Dagster or
of where files live, so the same code runs in a test, a notebook or a Kubernetes pod. Every result is independent of how the snapshot was
sharded: cross-shard duplicates are resolved by content, and the balancing draw of a pair depends only on the
pair itself and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from metaclip_assets.curation.balancing import (
    balance_pairs,
    entry_counts,
    entry_probabilities,
    keep_probability,
)
from metaclip_assets.curation.matching import Matcher, MatcherPool

ENTRY_IDS = "entry_ids"
# Which of several identical (url, text) pairs survives: the first by provenance, whatever the sharding.
_PROVENANCE_ORDER = ["url", "text", "source_file", "record_offset", "text_key"]


@dataclass
class MatchStats:
    pairs_in: int
    matched: int
    pair_entry_matches: int

    @property
    def match_rate(self) -> float:
        return self.matched / self.pairs_in if self.pairs_in else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "match_rate": round(self.match_rate, 6)}


def match_pool(pool: pl.DataFrame, matcher: Matcher | MatcherPool, threads: int = 1) -> tuple[pl.DataFrame, MatchStats]:
    """Pool rows that match at least one entry, with their sorted entry ids as a List(UInt32) column.

    `matcher` is a Matcher (on `threads` threads) or a MatcherPool (processes); the output is the same."""
    texts = pool["text"].to_list()
    offsets, ids = matcher.match_batch(texts, threads) if isinstance(matcher, Matcher) else matcher.match_batch(texts)
    lengths = np.diff(offsets)
    rows = np.flatnonzero(lengths)
    # Build the list column without a Python loop: (row, id) pairs grouped back per row, in row order.
    long = pl.DataFrame(
        {"_row": np.repeat(np.arange(len(pool), dtype=np.int64), lengths), ENTRY_IDS: ids.astype(np.uint32)}
    )
    per_row = long.group_by("_row", maintain_order=True).agg(pl.col(ENTRY_IDS))
    matched = pool[rows].with_columns(per_row[ENTRY_IDS].cast(pl.List(pl.UInt32)))
    stats = MatchStats(pairs_in=len(pool), matched=len(matched), pair_entry_matches=int(len(ids)))
    return matched, stats


def empty_matched(pool_schema: dict) -> pl.DataFrame:
    return pl.DataFrame(schema={**pool_schema, ENTRY_IDS: pl.List(pl.UInt32)})


MATCHED_ROW_GROUP = 8192  # rows per row group of a matched shard (sorted by pair_id): a bucket read skips the rest


def bucket_bounds(bucket: int, num_buckets: int) -> tuple[int, int | None]:
    """The pair_id range [lo, hi) of `bucket` of `num_buckets` equal ranges of the uint64 ids (hi None: to the end).
    Identical pairs share a pair_id, hence a bucket: deduplicating bucket by bucket is deduplicating the snapshot."""
    if not 0 <= bucket < num_buckets:
        raise ValueError(f"bucket {bucket} is not in [0, {num_buckets})")
    lo = (bucket << 64) // num_buckets
    return lo, None if bucket == num_buckets - 1 else ((bucket + 1) << 64) // num_buckets


def merge_shards(frames: Sequence[pl.DataFrame]) -> tuple[pl.DataFrame, int]:
    """One snapshot's matched pairs, deduplicated on (url, text) across shards; returns (frame, duplicates)."""
    if not frames:
        raise ValueError("no shard frames to merge")
    merged = pl.concat(list(frames), how="vertical")
    deduped = merged.sort(_PROVENANCE_ORDER).unique(subset=["url", "text"], keep="first", maintain_order=True)
    return deduped, len(merged) - len(deduped)


def csr(matched: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, entry_ids) of the entry_ids list column: the columnar form the numpy kernels take."""
    lengths = matched[ENTRY_IDS].list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = matched[ENTRY_IDS].explode().drop_nulls().to_numpy().astype(np.uint32)
    return offsets, ids


def count_entries(matched: pl.DataFrame, num_entries: int) -> np.ndarray:
    """uint64 count per entry id: how many (deduplicated) pairs matched it."""
    _, ids = csr(matched)
    if len(ids) and int(ids.max()) >= num_entries:
        raise ValueError(
            f"entry id {int(ids.max())} is out of range for {num_entries} metadata entries: the matched pool was "
            "built with a different metadata list; re-materialize matched_pool"
        )
    return entry_counts(ids, num_entries)


@dataclass
class BalanceStats:
    t: float
    seed: int
    matched: int
    curated: int
    expected_curated: float

    def as_dict(self) -> dict:
        return asdict(self)


def balance(
    matched: pl.DataFrame, counts: np.ndarray, *, t: float, seed: int
) -> tuple[pl.DataFrame, np.ndarray, BalanceStats]:
    """The balanced subset, the kept mask and stats. ``counts`` may be per snapshot or cumulative."""
    prob = entry_probabilities(counts, t)
    offsets, ids = csr(matched)
    pair_ids = matched["pair_id"].to_numpy().astype(np.uint64)
    keep = balance_pairs(pair_ids, offsets, ids, prob, seed=seed)
    expected = float(keep_probability(offsets, ids, prob).sum())
    curated = matched.filter(pl.Series(keep))
    stats = BalanceStats(t=t, seed=seed, matched=len(matched), curated=len(curated), expected_curated=expected)
    return curated, keep, stats
