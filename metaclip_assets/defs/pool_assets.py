"""Per (snapshot, shard) assets: the raw image-text pool read from crawl files, and its matched subset.

The work is `metaclip_assets.curation.steps` (pool_shard, matching); these assets wire partitions and storage.
"""

import dagster as dg
from pydantic import Field

from metaclip_assets.curation import steps
from metaclip_assets.curation.checks import DESCRIPTIONS, SHARD_NOT_EMPTY
from metaclip_assets.defs.partitions import (
    NUM_SHARDS,
    check_spec,
    materialize_each,
    run_partition_keys,
    shard_asset,
    split_key,
)
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.results import materialize_result


@shard_asset(
    deps=["crawl_files"],
    kinds={"polars", "parquet"},
    description="Image-text pairs read from this shard's CommonCrawl WAT/WARC files, with provenance; "
    "bad records skipped and counted by reason.",
    check_specs=[check_spec(SHARD_NOT_EMPTY, "crawl_pool", DESCRIPTIONS)],
)
def crawl_pool(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    storage, crawl = curation_storage.storage(), curation_storage.crawl_storage()

    def one(key: str) -> dg.MaterializeResult:
        r = steps.pool_shard(storage, crawl, *split_key(key), NUM_SHARDS, log=context.log.info)
        return materialize_result(
            {
                "dagster/row_count": r.pairs,
                "path": dg.MetadataValue.path(r.uri),
                "files": len(r.file_names),
                "records_read": r.stats.records_read,
                "bad_records": dg.MetadataValue.json(r.stats.skips),
                "bad_records_total": sum(r.stats.skips.values()),
                "stats": dg.MetadataValue.json(r.stats_dict),
            },
            [r.check],
        )

    return materialize_each(context, run_partition_keys(context), one)


class MatchConfig(dg.Config):
    workers: int = Field(
        default=steps.MatchSettings.workers,
        description="parallel matching for run pods with N cores. N > 1: N threads "
        "over the one compiled token table in the step's process (its lookups release the GIL), or, "
        "where the compiled module is not built, a MatcherPool of N spawned processes that each "
        "build the matcher once (~2 s per 500k entries). The output is identical either way.",
    )


@shard_asset(
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

    def converted(r: steps.MatchShard) -> dg.MaterializeResult:
        return materialize_result(
            {
                "dagster/row_count": r.rows,
                "path": dg.MetadataValue.path(r.uri),
                "pairs_in": r.stats["pairs_in"],
                "match_rate": dg.MetadataValue.float(r.stats["match_rate"]),
                "pair_entry_matches": r.stats["pair_entry_matches"],
                "metadata_sha256": r.sha256,
                "texts_per_s": r.stats["texts_per_s"],
            }
        )

    shards = {k: split_key(k) for k in keys}
    with steps.matching(storage, shards, NUM_SHARDS, config.workers, log=context.log.info) as match:
        return materialize_each(context, keys, lambda key: converted(match(*shards[key])))
