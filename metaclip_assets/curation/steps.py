"""Each curation asset's work on storage: read its inputs by layout key, run a stage, write its outputs and
compute its checks. Returns plain results; the Dagster assets in `defs/` only turn them into metadata.

Knows storage and layout, never Dagster. `log` arguments take any `str -> None` (the run log in an asset).
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import polars as pl

from metaclip_assets import layout
from metaclip_assets.checks import CheckResult
from metaclip_assets.crawl.build import build_pool
from metaclip_assets.crawl.pool import POOL_SCHEMA, ReadStats
from metaclip_assets.curation import checks
from metaclip_assets.curation.datacard import (
    DataCard,
    build_datacard,
    cumulative_plot_png,
    datacard_markdown,
    entry_count_mapping,
)
from metaclip_assets.curation.matching import Matcher, MatcherPool
from metaclip_assets.curation.stages import (
    MATCHED_ROW_GROUP,
    BalanceStats,
    balance,
    bucket_bounds,
    count_entries,
    csr,
    empty_matched,
    match_pool,
    merge_shards,
)
from metaclip_assets.metadata.current import load_current_metadata
from metaclip_assets.progress import Every
from metaclip_assets.sharding import files_for_shard
from metaclip_assets.storage import Storage, local_files

Log = Callable[[str], None]
CRAWL_SUFFIXES = (".wat.gz", ".warc.gz")
COUNT_MODES = ("snapshot", "cumulative")


def _quiet(_: str) -> None:
    pass


# ---- settings: the defaults the Dagster configs show ---------------------------------------------------------
@dataclass(frozen=True)
class MatchSettings:
    workers: int = 1  # N > 1: N threads over the compiled token table, or a MatcherPool of N processes


@dataclass(frozen=True)
class BalanceSettings:
    t: float = 20_000.0  # MetaCLIP's threshold: entries with count > t are sub-sampled
    seed: int = 0  # balancing draws are a hash of (pair, entry, seed)
    count_mode: str = "snapshot"  # or "cumulative": the counts of all snapshots up to this one

    def __post_init__(self) -> None:
        if self.count_mode not in COUNT_MODES:
            raise ValueError(f"count_mode must be 'snapshot' or 'cumulative', got {self.count_mode!r}")


def require_shards(storage: Storage, snapshot: str, key_fn, num_shards: int) -> list[str]:
    """`key_fn(snapshot, shard, num_shards)` of every shard, or a clear error naming what to materialize."""
    keys = [key_fn(snapshot, shard, num_shards) for shard in range(num_shards)]
    missing = [k for k in keys if not storage.exists(k)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {num_shards} shards of {snapshot} are not materialized yet ({missing[:4]}...): "
            f"materialize crawl_pool and matched_pool for every shard of {snapshot} first"
        )
    return keys


# ---- crawl_pool ----------------------------------------------------------------------------------------------
@dataclass
class PoolShard:
    pairs: int
    uri: str
    file_names: list[str]
    stats: ReadStats
    stats_dict: dict
    check: CheckResult


def pool_shard(
    storage: Storage, crawl: Storage, snapshot: str, shard: int, num_shards: int, log: Log = _quiet
) -> PoolShard:
    """Read this shard's crawl files (under `crawl`) into the pool parquet and its stats.json."""
    all_files = [key.rsplit("/", 1)[-1] for key in crawl.list(snapshot, CRAWL_SUFFIXES)]
    if not all_files:
        raise FileNotFoundError(
            f"no *.wat.gz / *.warc.gz files for snapshot {snapshot} under {crawl.uri(snapshot)}: put the crawl files "
            "there (or run `metaclip-assets make-sample` for the bundled sample)"
        )
    names = files_for_shard(all_files, shard, num_shards)
    log(f"shard {shard:03d}/{num_shards}: {len(names)} of {len(all_files)} crawl files: {names}")

    every = Every()

    def progress(stats) -> None:  # visible in the run log while a big shard is read
        if every.due():
            log(f"progress: {stats.records_read:,} records, {stats.pairs:,} pairs, skips {stats.skips}")

    with local_files(crawl, [f"{snapshot}/{n}" for n in names]) as paths:
        pool, stats = build_pool(list(zip(paths, names)), snapshot=snapshot, progress=progress)
    uri = storage.write_parquet(layout.pool_key(snapshot, shard, num_shards), pool)
    stats_dict = {**stats.as_dict(), "file_names": names}
    storage.write_json(layout.pool_stats_key(snapshot, shard, num_shards), stats_dict, indent=2)
    log(f"pool: {len(pool):,} pairs, stats {stats_dict}")
    return PoolShard(len(pool), uri, names, stats, stats_dict, checks.shard_not_empty(len(names), len(pool)))


# ---- matched_pool --------------------------------------------------------------------------------------------
@dataclass
class MatchShard:
    rows: int
    uri: str
    stats: dict
    sha256: str


@contextmanager
def matching(
    storage: Storage, shards: Mapping[str, tuple[str, int]], num_shards: int, workers: int, log: Log = _quiet
) -> Iterator[Callable[[str, int], MatchShard]]:
    """`match(snapshot, shard)` for the shards of one run (partition key -> (snapshot, shard)), over one matcher
    (or pool of worker processes, stopped on exit) built once against the current metadata."""
    missing = [
        f"{storage.uri(p)} is missing: materialize crawl_pool for {k} first"
        for k, p in ((k, layout.pool_key(snapshot, shard, num_shards)) for k, (snapshot, shard) in shards.items())
        if not storage.exists(p)
    ]
    if missing:  # checked before the matcher is built, which takes a while
        raise FileNotFoundError("; ".join(missing))
    entries, sha = load_current_metadata(storage)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    matcher = Matcher(entries)
    processes = workers > 1 and not matcher.parallel_ok(workers)
    with MatcherPool(entries, workers) if processes else nullcontext(matcher) as matcher:
        build_s = time.perf_counter() - started
        yield lambda snapshot, shard: match_shard(
            storage, matcher, sha, build_s, snapshot, shard, num_shards, workers, log
        )


def match_shard(
    storage: Storage,
    matcher: Matcher | MatcherPool,
    sha: str,
    build_s: float,
    snapshot: str,
    shard: int,
    num_shards: int,
    threads: int = 1,
    log: Log = _quiet,
) -> MatchShard:
    pool = storage.read_parquet(layout.pool_key(snapshot, shard, num_shards))
    built = time.perf_counter()
    matched, stats = match_pool(pool, matcher, threads) if len(pool) else (empty_matched(POOL_SCHEMA), None)
    elapsed = time.perf_counter() - built
    # Sorted by pair_id in small row groups: the snapshot steps read one pair_id range (bucket) at a time and skip
    # the other row groups by their statistics, whatever the bucket count.
    uri = storage.write_parquet(
        layout.matched_key(snapshot, shard, num_shards), matched.sort("pair_id"), row_group_size=MATCHED_ROW_GROUP
    )
    stats_dict = {
        **(stats.as_dict() if stats else {"pairs_in": 0, "matched": 0, "pair_entry_matches": 0, "match_rate": 0.0}),
        "metadata_sha256": sha,
        "matcher_build_s": round(build_s, 3),
        "match_s": round(elapsed, 3),
        "texts_per_s": round(len(pool) / elapsed, 1) if elapsed > 0 else None,
    }
    storage.write_json(layout.matched_stats_key(snapshot, shard, num_shards), stats_dict, indent=2)
    log(f"matched: {stats_dict}")
    return MatchShard(len(matched), uri, stats_dict, sha)


# ---- entry_counts --------------------------------------------------------------------------------------------
@dataclass
class SnapshotCounts:
    summary: dict  # what counts/<snapshot>/shards-N/buckets-B/summary.json holds
    top_entries: dict[str, int]  # the ten most matched entries
    dedup_dir: str  # where the deduplicated buckets are
    skipped: list[str]  # earlier snapshots left out of the cumulative counts (other metadata or curation)
    check: CheckResult


def count_snapshot(
    storage: Storage,
    entries: list[str],
    sha: str,
    snapshot: str,
    num_shards: int,
    registered: Sequence[str],
    num_buckets: int,
    log: Log = _quiet,
) -> SnapshotCounts:
    """Count matches per entry over the snapshot, one bucket (pair_id range) at a time: read the bucket's rows
    from every matched shard, drop cross-shard duplicates, count, write the deduplicated bucket. Memory: one
    bucket (~ matched pairs / num_buckets), never the snapshot. Then add the counts of every earlier `registered`
    snapshot curated with the same metadata, shard and bucket count (cumulative counts)."""
    keys = require_shards(storage, snapshot, layout.matched_key, num_shards)
    for key, shard in zip(keys, range(num_shards)):
        stats = storage.read_json(layout.matched_stats_key(snapshot, shard, num_shards))
        if stats["metadata_sha256"] != sha:
            raise ValueError(
                f"{key} was matched against metadata {stats['metadata_sha256'][:12]}, but the current metadata is "
                f"{sha[:12]}: re-materialize matched_pool for {snapshot}"
            )
    counts = np.zeros(len(entries), dtype=np.uint64)
    matched_pairs = duplicates = pair_entry_matches = largest = 0
    every = Every()
    for bucket in range(num_buckets):
        lo, hi = bucket_bounds(bucket, num_buckets)
        merged, dups = merge_shards([storage.read_parquet_range(key, "pair_id", lo, hi) for key in keys])
        counts += count_entries(merged, len(entries))
        storage.write_parquet(layout.dedup_bucket_key(snapshot, num_shards, num_buckets, bucket), merged)
        matched_pairs += len(merged)
        duplicates += dups
        pair_entry_matches += int(merged["entry_ids"].list.len().sum() or 0)
        largest = max(largest, len(merged))
        if every.due(force=bucket == num_buckets - 1):
            log(f"counted bucket {bucket + 1}/{num_buckets}: {matched_pairs:,} pairs so far")
    storage.write_npy(layout.counts_key(snapshot, num_shards, num_buckets), counts)

    cumulative, included, skipped = counts.copy(), [snapshot], []
    for earlier in (s for s in sorted(registered) if s < snapshot):
        summary_key = layout.counts_summary_key(earlier, num_shards, num_buckets)
        if storage.exists(summary_key) and storage.read_json(summary_key)["metadata_sha256"] == sha:
            cumulative += storage.read_npy(layout.counts_key(earlier, num_shards, num_buckets))
            included.append(earlier)
        else:
            skipped.append(earlier)
    storage.write_npy(layout.counts_key(snapshot, num_shards, num_buckets, cumulative=True), cumulative)

    summary = {
        "snapshot": snapshot,
        "metadata_sha256": sha,
        "entries": len(entries),
        "matched_pairs": matched_pairs,
        "cross_shard_duplicates": duplicates,
        "pair_entry_matches": pair_entry_matches,
        "entries_matched": int((counts > 0).sum()),
        "cumulative_snapshots": sorted(included),
        "num_shards": num_shards,
        "num_buckets": num_buckets,
        "largest_bucket_pairs": largest,  # what one step held at most
    }
    storage.write_json(layout.counts_summary_key(snapshot, num_shards, num_buckets), summary, indent=2)
    top = np.argsort(-counts.astype(np.int64), kind="stable")[:10]
    return SnapshotCounts(
        summary=summary,
        top_entries={entries[i]: int(counts[i]) for i in top if counts[i] > 0},
        dedup_dir=storage.uri(layout.curation_dir("counts", snapshot, num_shards, num_buckets)),
        skipped=skipped,
        check=checks.counts_sum_to_matches(storage, snapshot, num_shards, num_buckets),
    )


# ---- balanced_subset -----------------------------------------------------------------------------------------
@dataclass
class SnapshotBalance:
    stats: BalanceStats
    summary: dict  # what balanced/<snapshot>/shards-N/buckets-B/summary.json holds
    uri: str  # the folder of curated-<bucket>.parquet files
    check: CheckResult


def balance_snapshot(
    storage: Storage, snapshot: str, settings: BalanceSettings, num_shards: int, num_buckets: int
) -> SnapshotBalance:
    """Balance bucket by bucket with the snapshot's (or cumulative) counts: a pair's draw depends on the pair, its
    entries' counts and the seed only, so the curated set is the same for every shard and bucket count."""
    cumulative = settings.count_mode == "cumulative"
    counts = storage.read_npy(layout.counts_key(snapshot, num_shards, num_buckets, cumulative=cumulative))
    matched_total = curated_total = 0
    expected = 0.0
    subset_checks = []
    for bucket in range(num_buckets):
        matched = storage.read_parquet(layout.dedup_bucket_key(snapshot, num_shards, num_buckets, bucket))
        curated, _, stats = balance(matched, counts, t=settings.t, seed=settings.seed)
        key = layout.balanced_bucket_key(snapshot, num_shards, num_buckets, bucket)
        storage.write_parquet(key, curated)
        subset_checks.append(checks.curated_subset_of_matched(storage, key, matched))
        matched_total += stats.matched
        curated_total += stats.curated
        expected += stats.expected_curated
    stats = BalanceStats(
        t=settings.t, seed=settings.seed, matched=matched_total, curated=curated_total, expected_curated=expected
    )
    summary = {
        **stats.as_dict(),
        "count_mode": settings.count_mode,
        "snapshot": snapshot,
        "num_shards": num_shards,
        "num_buckets": num_buckets,
        "metadata_sha256": storage.read_json(layout.counts_summary_key(snapshot, num_shards, num_buckets))[
            "metadata_sha256"
        ],
    }
    storage.write_json(layout.balanced_summary_key(snapshot, num_shards, num_buckets), summary, indent=2)
    uri = storage.uri(layout.curation_dir("balanced", snapshot, num_shards, num_buckets))
    return SnapshotBalance(stats, summary, uri, checks.combine(subset_checks))


def read_curated(
    storage: Storage, snapshot: str, num_shards: int, num_buckets: int, columns: list[str] | None = None
) -> Iterator[pl.DataFrame]:
    """The balanced subset, one bucket at a time (what acquisition, the report and the data card read)."""
    for bucket in range(num_buckets):
        key = layout.balanced_bucket_key(snapshot, num_shards, num_buckets, bucket)
        if not storage.exists(key):
            raise FileNotFoundError(
                f"{storage.uri(key)} is missing: materialize balanced_subset for {snapshot} first (with "
                f"{num_shards} shards and {num_buckets} buckets)"
            )
        yield storage.read_parquet(key, columns=columns)


# ---- data_card -----------------------------------------------------------------------------------------------
@dataclass
class SnapshotCard:
    card: DataCard
    t: float
    funnel: dict
    bad_records: dict[str, int]
    other_skipped: dict[str, int]  # not errors: non-HTML captures, links without text, data: URIs
    markdown_inline: str  # the card with its plot inlined (for a UI that cannot follow a relative link)
    card_uri: str
    plot_uri: str
    check: CheckResult


def pool_funnel(pool_stats: list[dict], match_stats: list[dict]) -> tuple[dict, Counter[str], Counter[str]]:
    """(funnel counts from crawl files to pairs matched per shard, bad records by reason, benign skips)."""
    bad: Counter[str] = Counter()
    benign: Counter[str] = Counter()
    for s in pool_stats:
        bad.update(s["skips"])
        benign.update(s["counts"])
    funnel = {
        "crawl_files": sum(s["files"] for s in pool_stats),
        "records_read": sum(s["records_read"] for s in pool_stats),
        "bad_records": sum(bad.values()),
        "image_links": sum(s["images_seen"] for s in pool_stats),
        "pairs_extracted": sum(s["pairs"] + s["duplicates_dropped"] for s in pool_stats),
        "pairs_in_pool": sum(s["pairs_in"] for s in match_stats),
        "matched_pairs_per_shard": sum(s["matched"] for s in match_stats),
    }
    return funnel, bad, benign


def card_for_snapshot(
    storage: Storage, entries: list[str], sha: str, snapshot: str, num_shards: int, num_buckets: int
) -> SnapshotCard:
    """Write the data card folder (datacard.json, entry_counts_before.json, summary.json, datacard.md, plot)."""
    n, b = num_shards, num_buckets
    summary = storage.read_json(layout.balanced_summary_key(snapshot, n, b))
    counts_summary = storage.read_json(layout.counts_summary_key(snapshot, n, b))
    counts_before = storage.read_npy(layout.counts_key(snapshot, n, b))
    balance_counts = storage.read_npy(
        layout.counts_key(snapshot, n, b, cumulative=summary["count_mode"] == "cumulative")
    )
    counts_after = np.zeros(len(entries), dtype=np.uint64)
    for curated in read_curated(storage, snapshot, n, b, columns=["entry_ids"]):
        counts_after += np.bincount(csr(curated)[1], minlength=len(entries)).astype(np.uint64)

    pool_stats = [storage.read_json(k) for k in require_shards(storage, snapshot, layout.pool_stats_key, num_shards)]
    match_stats = [
        storage.read_json(k) for k in require_shards(storage, snapshot, layout.matched_stats_key, num_shards)
    ]
    funnel, bad, benign = pool_funnel(pool_stats, match_stats)
    funnel |= {
        "matched_pairs": counts_summary["matched_pairs"],
        "curated_pairs": summary["curated"],
        "expected_curated": round(summary["expected_curated"], 2),
    }
    card = build_datacard(
        snapshot=snapshot,
        entries=entries,
        metadata_sha256=sha,
        counts_before=counts_before,
        counts_after=counts_after,
        balance_counts=balance_counts,
        t=summary["t"],
        seed=summary["seed"],
        count_mode=summary["count_mode"],
        funnel=funnel,
        bad_records=dict(bad),
        other_skipped=dict(benign),
    )
    png = cumulative_plot_png(counts_before, counts_after, summary["t"], f"{snapshot}: cumulative matches")
    plot_uri = storage.write_bytes(layout.datacard_key(snapshot, n, b, layout.DATACARD_PLOT), png)
    card_uri = storage.write_json(layout.datacard_key(snapshot, n, b), entry_count_mapping(entries, counts_after))
    storage.write_json(
        layout.datacard_key(snapshot, n, b, "entry_counts_before.json"), entry_count_mapping(entries, counts_before)
    )
    storage.write_json(layout.datacard_key(snapshot, n, b, "summary.json"), card.summary(), indent=2)
    storage.write_text(
        layout.datacard_key(snapshot, n, b, "datacard.md"), datacard_markdown(card, plot_uri=layout.DATACARD_PLOT)
    )
    inline_plot = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    return SnapshotCard(
        card=card,
        t=summary["t"],
        funnel=funnel,
        bad_records=dict(bad),
        other_skipped=dict(benign),
        markdown_inline=datacard_markdown(card, plot_uri=inline_plot),
        card_uri=card_uri,
        plot_uri=plot_uri,
        check=checks.totals_match_parquet(storage, snapshot, n, b, int(counts_after.sum())),
    )
