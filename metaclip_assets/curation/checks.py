"""The curation assets' checks as plain functions over the files written, returning `CheckResult`s.

Each check re-reads what its step wrote, so a broken write or a stale file fails it, not only a wrong number.
Imports storage and layout, never Dagster.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from metaclip_assets import layout
from metaclip_assets.checks import CheckResult
from metaclip_assets.storage import Storage

SHARD_NOT_EMPTY = "shard_not_empty"
COUNTS_SUM_TO_MATCHES = "counts_sum_to_matches"
CURATED_SUBSET_OF_MATCHED = "curated_subset_of_matched"
TOTALS_MATCH_PARQUET = "totals_match_parquet"
# What each check asserts, as the UI shows it beside the check.
DESCRIPTIONS = {
    SHARD_NOT_EMPTY: "The shard had crawl files and they yielded pairs.",
    COUNTS_SUM_TO_MATCHES: "Sum of counts == number of (pair, entry) matches in the matched set.",
    CURATED_SUBSET_OF_MATCHED: "Every curated pair is in the matched set, with the same entries.",
    TOTALS_MATCH_PARQUET: "The card's totals equal the row counts of the parquet files.",
}


def shard_not_empty(files: int, pairs: int) -> CheckResult:
    """The shard had crawl files and they yielded pairs; a shard no file hashes to is a warning, not an error."""
    if not files:
        return CheckResult(
            SHARD_NOT_EMPTY,
            passed=False,
            severity="WARN",
            metadata={"reason": "no crawl file hashes to this shard; fewer shards may fit"},
        )
    return CheckResult(SHARD_NOT_EMPTY, passed=pairs > 0, metadata={"files": files, "pairs": pairs})


def _dedup_keys(snapshot: str, num_shards: int, num_buckets: int) -> list[str]:
    return [layout.dedup_bucket_key(snapshot, num_shards, num_buckets, b) for b in range(num_buckets)]


def _balanced_keys(snapshot: str, num_shards: int, num_buckets: int) -> list[str]:
    return [layout.balanced_bucket_key(snapshot, num_shards, num_buckets, b) for b in range(num_buckets)]


def counts_sum_to_matches(storage: Storage, snapshot: str, num_shards: int, num_buckets: int) -> CheckResult:
    """Sum of the stored counts == number of (pair, entry) matches in the stored matched buckets."""
    stored = storage.read_npy(layout.counts_key(snapshot, num_shards, num_buckets))
    reread_total = sum(
        int(storage.read_parquet(key, columns=["entry_ids"])["entry_ids"].list.len().sum() or 0)
        for key in _dedup_keys(snapshot, num_shards, num_buckets)
    )
    return CheckResult(
        COUNTS_SUM_TO_MATCHES,
        passed=bool(stored.dtype == np.uint64 and int(stored.sum()) == reread_total),
        metadata={"sum_of_counts": int(stored.sum()), "pair_entry_matches": reread_total, "dtype": str(stored.dtype)},
    )


def curated_subset_of_matched(storage: Storage, curated_key: str, matched: pl.DataFrame) -> CheckResult:
    """Every pair stored under `curated_key` (one bucket) is in `matched` (that bucket), with the same entries."""
    reread = storage.read_parquet(curated_key, columns=["url", "text", "pair_id", "entry_ids"])
    joined = reread.join(
        matched.select(["url", "text", "pair_id", "entry_ids"]),
        on=["url", "text", "pair_id"],
        how="left",
        suffix="_matched",
    )
    outside = joined.filter(
        pl.col("entry_ids_matched").is_null() | (pl.col("entry_ids") != pl.col("entry_ids_matched"))
    )
    return CheckResult(
        CURATED_SUBSET_OF_MATCHED,
        passed=len(outside) == 0,
        metadata={"curated": len(reread), "not_in_matched": len(outside)},
    )


def combine(results: list[CheckResult]) -> CheckResult:
    """One check over buckets: passed when every bucket's passed, numbers summed."""
    metadata: dict = {}
    for r in results:
        for k, v in r.metadata.items():
            metadata[k] = metadata.get(k, 0) + v if isinstance(v, int | float) else v
    metadata["buckets"] = len(results)
    return CheckResult(results[0].name, passed=all(r.passed for r in results), metadata=metadata)


def totals_match_parquet(
    storage: Storage, snapshot: str, num_shards: int, num_buckets: int, curated_entry_total: int
) -> CheckResult:
    """The written card's totals equal the row counts of the parquet files read back (not the numbers computed
    while writing the card)."""
    n, b = num_shards, num_buckets
    matched_rows = sum(len(storage.read_parquet(k, columns=["pair_id"])) for k in _dedup_keys(snapshot, n, b))
    curated_rows = sum(len(storage.read_parquet(k, columns=["pair_id"])) for k in _balanced_keys(snapshot, n, b))
    card_after_total = sum(storage.read_json(layout.datacard_key(snapshot, n, b, "datacard.json")).values())
    written = storage.read_json(layout.datacard_key(snapshot, n, b, "summary.json"))["funnel"]
    return CheckResult(
        TOTALS_MATCH_PARQUET,
        passed=written["matched_pairs"] == matched_rows
        and written["curated_pairs"] == curated_rows
        and card_after_total == curated_entry_total,
        metadata={
            "card_matched": written["matched_pairs"],
            "parquet_matched": matched_rows,
            "card_curated": written["curated_pairs"],
            "parquet_curated": curated_rows,
            "card_entry_total": card_after_total,
            "parquet_entry_total": curated_entry_total,
        },
    )
