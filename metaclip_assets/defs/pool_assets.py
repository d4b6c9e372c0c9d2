"""Per (snapshot, shard) assets: the raw image-text pool read from crawl files, and its matched subset."""

import time
from contextlib import nullcontext

import dagster as dg
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.crawl.build import build_pool
from metaclip_assets.crawl.pool import POOL_SCHEMA
from metaclip_assets.curation.matching import Matcher, MatcherPool
from metaclip_assets.curation.stages import empty_matched, match_pool
from metaclip_assets.defs.metadata_asset import load_current_metadata
from metaclip_assets.defs.partitions import (
    NUM_SHARDS,
    materialize_each,
    one_run_per_range,
    run_partition_keys,
    snapshot_shard_partitions,
    split_key,
)
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.sharding import files_for_shard
from metaclip_assets.storage import Storage

CRAWL_SUFFIXES = (".wat.gz", ".warc.gz")
PROGRESS_EVERY_S = 5.0


@dg.asset(
    group_name="curation",
    partitions_def=snapshot_shard_partitions,
    backfill_policy=one_run_per_range,
    deps=["crawl_files"],
    kinds={"polars", "parquet"},
    description="Image-text pairs read from this shard's CommonCrawl WAT/WARC files, with provenance; "
    "bad records skipped and counted by reason.",
    check_specs=[
        dg.AssetCheckSpec(
            "shard_not_empty",
            asset="crawl_pool",
            blocking=True,
            description="The shard had crawl files and they yielded pairs.",
        )
    ],
)
def crawl_pool(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    return materialize_each(
        context, run_partition_keys(context), lambda key: _crawl_pool_shard(context, curation_storage, *split_key(key))
    )


def _crawl_pool_shard(
    context: dg.AssetExecutionContext, curation_storage: CurationStorage, snapshot: str, shard: int
) -> dg.MaterializeResult:
    storage, crawl = curation_storage.storage(), curation_storage.crawl_storage()
    all_files = [key.rsplit("/", 1)[-1] for key in crawl.list(snapshot, CRAWL_SUFFIXES)]
    if not all_files:
        raise FileNotFoundError(
            f"no *.wat.gz / *.warc.gz files for snapshot {snapshot} under {crawl.uri(snapshot)}: put the crawl files "
            "there (or run `metaclip-assets make-sample` for the bundled sample)"
        )
    names = files_for_shard(all_files, shard, NUM_SHARDS)
    context.log.info(f"shard {shard:03d}/{NUM_SHARDS}: {len(names)} of {len(all_files)} crawl files: {names}")

    last = [time.monotonic()]

    def progress(stats) -> None:  # visible in the run log while a big shard is read
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            context.log.info(f"progress: {stats.records_read:,} records, {stats.pairs:,} pairs, skips {stats.skips}")

    with curation_storage.local_files(crawl, [f"{snapshot}/{n}" for n in names]) as paths:
        pool, stats = build_pool(list(zip(paths, names)), snapshot=snapshot, progress=progress)
    uri = storage.write_parquet(layout.pool_key(snapshot, shard, NUM_SHARDS), pool)
    stats_dict = {**stats.as_dict(), "file_names": names}
    storage.write_json(layout.pool_stats_key(snapshot, shard, NUM_SHARDS), stats_dict, indent=2)
    context.log.info(f"pool: {len(pool):,} pairs, stats {stats_dict}")

    if not names:
        check = dg.AssetCheckResult(
            check_name="shard_not_empty",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"reason": "no crawl file hashes to this shard; fewer shards may fit"},
        )
    else:
        check = dg.AssetCheckResult(
            check_name="shard_not_empty", passed=len(pool) > 0, metadata={"files": len(names), "pairs": len(pool)}
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(pool),
            "path": dg.MetadataValue.path(uri),
            "files": len(names),
            "records_read": stats.records_read,
            "bad_records": dg.MetadataValue.json(stats.skips),
            "bad_records_total": sum(stats.skips.values()),
            "stats": dg.MetadataValue.json(stats_dict),
        },
        check_results=[check],
    )


class MatchConfig(dg.Config):
    workers: int = Field(
        default=1,
        description="parallel matching for run pods with N cores. N > 1: N threads "
        "over the one compiled token table in the step's process (its lookups release the GIL), or, "
        "where the compiled module is not built, a MatcherPool of N spawned processes that each "
        "build the matcher once (~2 s per 500k entries). The output is identical either way.",
    )


@dg.asset(
    group_name="curation",
    partitions_def=snapshot_shard_partitions,
    backfill_policy=one_run_per_range,
    deps=[crawl_pool, "metadata_entries"],
    kinds={"polars", "parquet"},
    description="Pool pairs whose text matches at least one metadata entry (MetaCLIP v1 substring matching), "
    "with the matched entry ids per pair.",
)
def matched_pool(
    context: dg.AssetExecutionContext, curation_storage: CurationStorage, config: MatchConfig
) -> dg.MaterializeResult:
    keys = run_partition_keys(context)
    storage = curation_storage.storage()
    pool_keys = {k: layout.pool_key(*split_key(k), NUM_SHARDS) for k in keys}
    missing = [
        f"{storage.uri(p)} is missing: materialize crawl_pool for {k} first"
        for k, p in pool_keys.items()
        if not storage.exists(p)
    ]
    if missing:  # checked before the matcher is built, which takes a while
        raise FileNotFoundError("; ".join(missing))
    entries, sha = load_current_metadata(storage)
    if config.workers < 1:
        raise ValueError(f"workers must be >= 1, got {config.workers}")
    started = time.perf_counter()
    # one matcher (or pool of worker processes, stopped on exit) for every shard of a ranged run
    matcher = Matcher(entries)
    processes = config.workers > 1 and not matcher.parallel_ok(config.workers)
    with MatcherPool(entries, config.workers) if processes else nullcontext(matcher) as matcher:
        build_s = time.perf_counter() - started
        return materialize_each(
            context,
            keys,
            lambda key: _match_shard(context, storage, matcher, sha, build_s, *split_key(key), threads=config.workers),
        )


def _match_shard(
    context: dg.AssetExecutionContext,
    storage: Storage,
    matcher: Matcher | MatcherPool,
    sha: str,
    build_s: float,
    snapshot: str,
    shard: int,
    threads: int = 1,
) -> dg.MaterializeResult:
    pool = storage.read_parquet(layout.pool_key(snapshot, shard, NUM_SHARDS))
    built = time.perf_counter()
    matched, stats = match_pool(pool, matcher, threads) if len(pool) else (empty_matched(POOL_SCHEMA), None)
    elapsed = time.perf_counter() - built
    uri = storage.write_parquet(layout.matched_key(snapshot, shard, NUM_SHARDS), matched)
    stats_dict = {
        **(stats.as_dict() if stats else {"pairs_in": 0, "matched": 0, "pair_entry_matches": 0, "match_rate": 0.0}),
        "metadata_sha256": sha,
        "matcher_build_s": round(build_s, 3),
        "match_s": round(elapsed, 3),
        "texts_per_s": round(len(pool) / elapsed, 1) if elapsed > 0 else None,
    }
    storage.write_json(layout.matched_stats_key(snapshot, shard, NUM_SHARDS), stats_dict, indent=2)
    context.log.info(f"matched: {stats_dict}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(matched),
            "path": dg.MetadataValue.path(uri),
            "pairs_in": stats_dict["pairs_in"],
            "match_rate": dg.MetadataValue.float(stats_dict["match_rate"]),
            "pair_entry_matches": stats_dict["pair_entry_matches"],
            "metadata_sha256": sha,
            "texts_per_s": stats_dict["texts_per_s"],
        }
    )
