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
    BalanceStats,
    balance,
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
    uri = storage.write_parquet(layout.matched_key(snapshot, shard, num_shards), matched)
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
    summary: dict  # what counts/<snapshot>/summary.json holds
    top_entries: dict[str, int]  # the ten most matched entries
    merged_uri: str
    skipped: list[str]  # earlier snapshots left out of the cumulative counts (other metadata)
    check: CheckResult


def count_snapshot(
    storage: Storage, entries: list[str], sha: str, snapshot: str, num_shards: int, registered: Sequence[str]
) -> SnapshotCounts:
    """Merge the snapshot's matched shards, count matches per entry, and add the counts of every earlier
    `registered` snapshot counted with the same metadata (cumulative counts)."""
    frames = []
    for key, stats_key in zip(
        require_shards(storage, snapshot, layout.matched_key, num_shards),
        [layout.matched_stats_key(snapshot, shard, num_shards) for shard in range(num_shards)],
    ):
        stats = storage.read_json(stats_key)
        if stats["metadata_sha256"] != sha:
            raise ValueError(
                f"{key} was matched against metadata {stats['metadata_sha256'][:12]}, but the current metadata is "
                f"{sha[:12]}: re-materialize matched_pool for {snapshot}"
            )
        frames.append(storage.read_parquet(key))
    merged, duplicates = merge_shards(frames)
    counts = count_entries(merged, len(entries))
    merged_uri = storage.write_parquet(layout.merged_matched_key(snapshot), merged)
    storage.write_npy(layout.counts_key(snapshot), counts)

    cumulative, included, skipped = counts.copy(), [snapshot], []
    for earlier in (s for s in sorted(registered) if s < snapshot):
        summary_key = layout.counts_summary_key(earlier)
        if storage.exists(summary_key) and storage.read_json(summary_key)["metadata_sha256"] == sha:
            cumulative += storage.read_npy(layout.counts_key(earlier))
            included.append(earlier)
        else:
            skipped.append(earlier)
    storage.write_npy(layout.counts_key(snapshot, cumulative=True), cumulative)

    summary = {
        "snapshot": snapshot,
        "metadata_sha256": sha,
        "entries": len(entries),
        "matched_pairs": len(merged),
        "cross_shard_duplicates": duplicates,
        "pair_entry_matches": int(merged["entry_ids"].list.len().sum() or 0),
        "entries_matched": int((counts > 0).sum()),
        "cumulative_snapshots": sorted(included),
    }
    storage.write_json(layout.counts_summary_key(snapshot), summary, indent=2)
    top = np.argsort(-counts.astype(np.int64), kind="stable")[:10]
    return SnapshotCounts(
        summary=summary,
        top_entries={entries[i]: int(counts[i]) for i in top if counts[i] > 0},
        merged_uri=merged_uri,
        skipped=skipped,
        check=checks.counts_sum_to_matches(storage, snapshot),
    )


# ---- balanced_subset -----------------------------------------------------------------------------------------
@dataclass
class SnapshotBalance:
    stats: BalanceStats
    summary: dict  # what balanced/<snapshot>/summary.json holds
    uri: str
    check: CheckResult


def balance_snapshot(storage: Storage, snapshot: str, settings: BalanceSettings) -> SnapshotBalance:
    matched = storage.read_parquet(layout.merged_matched_key(snapshot))
    counts = storage.read_npy(layout.counts_key(snapshot, cumulative=settings.count_mode == "cumulative"))
    curated, _, stats = balance(matched, counts, t=settings.t, seed=settings.seed)
    uri = storage.write_parquet(layout.balanced_key(snapshot), curated)
    summary = {
        **stats.as_dict(),
        "count_mode": settings.count_mode,
        "snapshot": snapshot,
        "metadata_sha256": storage.read_json(layout.counts_summary_key(snapshot))["metadata_sha256"],
    }
    storage.write_json(layout.balanced_summary_key(snapshot), summary, indent=2)
    return SnapshotBalance(stats, summary, uri, checks.curated_subset_of_matched(storage, snapshot, matched))


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


def card_for_snapshot(storage: Storage, entries: list[str], sha: str, snapshot: str, num_shards: int) -> SnapshotCard:
    """Write the data card folder (datacard.json, entry_counts_before.json, summary.json, datacard.md, plot)."""
    summary = storage.read_json(layout.balanced_summary_key(snapshot))
    counts_summary = storage.read_json(layout.counts_summary_key(snapshot))
    curated = storage.read_parquet(layout.balanced_key(snapshot), columns=["entry_ids"])
    counts_before = storage.read_npy(layout.counts_key(snapshot))
    balance_counts = storage.read_npy(layout.counts_key(snapshot, cumulative=summary["count_mode"] == "cumulative"))
    _, curated_ids = csr(curated)
    counts_after = np.bincount(curated_ids, minlength=len(entries)).astype(np.uint64)

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
    plot_uri = storage.write_bytes(layout.datacard_key(snapshot, layout.DATACARD_PLOT), png)
    card_uri = storage.write_json(layout.datacard_key(snapshot), entry_count_mapping(entries, counts_after))
    storage.write_json(
        layout.datacard_key(snapshot, "entry_counts_before.json"), entry_count_mapping(entries, counts_before)
    )
    storage.write_json(layout.datacard_key(snapshot, "summary.json"), card.summary(), indent=2)
    storage.write_text(
        layout.datacard_key(snapshot, "datacard.md"), datacard_markdown(card, plot_uri=layout.DATACARD_PLOT)
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
        check=checks.totals_match_parquet(storage, snapshot, len(curated_ids)),
    )
