"""Per-snapshot assets: entry counts over all shards, the balanced subset, and the data card.

The work is `metaclip_assets.curation.steps` (count_snapshot, balance_snapshot, card_for_snapshot); these assets
wire partitions and storage and turn the plain results into Dagster metadata.
"""

import dataclasses

import dagster as dg
from pydantic import Field

from metaclip_assets.curation import steps
from metaclip_assets.curation import tracking as curation_tracking
from metaclip_assets.curation.checks import (
    COUNTS_SUM_TO_MATCHES,
    CURATED_SUBSET_OF_MATCHED,
    DESCRIPTIONS,
    TOTALS_MATCH_PARQUET,
)
from metaclip_assets.defs.partitions import (
    NUM_BUCKETS,
    NUM_SHARDS,
    SNAPSHOT_PARTITIONS_NAME,
    all_shards_of_snapshot,
    check_spec,
    materialize_each,
    run_partition_keys,
    snapshot_asset,
)
from metaclip_assets.defs.pool_assets import matched_pool
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.results import materialize_result
from metaclip_assets.metadata.current import load_current_metadata
from metaclip_assets.storage import Storage
from metaclip_assets.training.plan import ASSET_DEFAULTS as TRAINING
from metaclip_assets.training.tracking import Tracker, sqlite_store_uri


@snapshot_asset(
    deps=[dg.AssetDep(matched_pool, partition_mapping=all_shards_of_snapshot)],
    kinds={"numpy"},
    description="uint64 match count per metadata entry over the whole snapshot (all shards, cross-shard "
    "duplicates removed, reduced one pair_id bucket at a time), plus the cumulative counts over all snapshots up "
    "to this one (TiC-style).",
    check_specs=[check_spec(COUNTS_SUM_TO_MATCHES, "entry_counts", DESCRIPTIONS)],
)
def entry_counts(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    entries, sha = load_current_metadata(storage)

    def one(snapshot: str) -> dg.MaterializeResult:
        # Cumulative counts: this snapshot plus every earlier registered snapshot counted with the same metadata.
        registered = context.instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME)
        r = steps.count_snapshot(
            storage, entries, sha, snapshot, NUM_SHARDS, registered, NUM_BUCKETS, log=context.log.info
        )
        for earlier in r.skipped:
            context.log.warning(f"cumulative counts skip {earlier}: no entry counts with metadata {sha[:12]}")
        return materialize_result(
            {
                "matched_pairs": r.summary["matched_pairs"],
                "cross_shard_duplicates": r.summary["cross_shard_duplicates"],
                "pair_entry_matches": r.summary["pair_entry_matches"],
                "entries_matched": r.summary["entries_matched"],
                "cumulative_snapshots": dg.MetadataValue.json(r.summary["cumulative_snapshots"]),
                "top_entries": dg.MetadataValue.json(r.top_entries),
                "buckets": NUM_BUCKETS,
                "largest_bucket_pairs": r.summary["largest_bucket_pairs"],
                "matched_dedup_dir": dg.MetadataValue.path(r.dedup_dir),
            },
            [r.check],
        )

    # Oldest first (ids sort by date): a snapshot's cumulative counts include the earlier ones of the same run.
    return materialize_each(context, sorted(run_partition_keys(context)), one)


class BalanceConfig(dg.Config):
    t: float = Field(
        default=steps.BalanceSettings.t,
        description="MetaCLIP's threshold: entries with count > t are sub-sampled.",
    )
    seed: int = Field(
        default=steps.BalanceSettings.seed,
        description="Balancing draws are a hash of (pair, entry, seed): same seed, same set.",
    )
    count_mode: str = Field(
        default=steps.BalanceSettings.count_mode,
        description="'snapshot' or 'cumulative' (all snapshots up to this).",
    )


@snapshot_asset(
    deps=[entry_counts],
    kinds={"polars", "parquet"},
    description="The MetaCLIP-balanced subset: a pair is kept if any matched entry samples it with "
    "probability t / max(count, t). Deterministic per pair and seed, independent of sharding.",
    check_specs=[check_spec(CURATED_SUBSET_OF_MATCHED, "balanced_subset", DESCRIPTIONS)],
)
def balanced_subset(
    context: dg.AssetExecutionContext, config: BalanceConfig, curation_storage: CurationStorage
) -> dg.MaterializeResult:
    settings = steps.BalanceSettings(t=config.t, seed=config.seed, count_mode=config.count_mode)
    storage = curation_storage.storage()

    def one(snapshot: str) -> dg.MaterializeResult:
        r = steps.balance_snapshot(storage, snapshot, settings, NUM_SHARDS, NUM_BUCKETS)
        context.log.info(f"balanced: {r.summary}")
        stats = r.stats
        return materialize_result(
            {
                "dagster/row_count": stats.curated,
                "path": dg.MetadataValue.path(r.uri),
                "t": config.t,
                "seed": config.seed,
                "count_mode": config.count_mode,
                "matched_pairs": stats.matched,
                "curated_pairs": stats.curated,
                "expected_curated": dg.MetadataValue.float(round(stats.expected_curated, 2)),
                "kept_share": dg.MetadataValue.float(round(stats.curated / stats.matched, 4) if stats.matched else 0.0),
            },
            [r.check],
        )

    return materialize_each(context, sorted(run_partition_keys(context)), one)


class DataCardConfig(dg.Config):
    """The curation run in MLflow: same store and experiment as the training's (training/plan.py ASSET_DEFAULTS)."""

    experiment: str = Field(default=TRAINING.experiment, description="MLflow experiment (one per pipeline)")
    tracking_uri: str | None = Field(
        default=TRAINING.tracking_uri,
        description="None: $MLFLOW_TRACKING_URI, else the data root's sqlite store; 'none' logs no curation run",
    )
    mlflow_ui_url: str | None = Field(
        default=TRAINING.mlflow_ui_url, description="UI base for run links of a sqlite store"
    )


def curation_tracker(config: DataCardConfig, storage: Storage, log) -> Tracker | None:
    """The training's store rule; an object-store data root has no sqlite file, so only a configured store."""
    uri = dataclasses.replace(TRAINING, tracking_uri=config.tracking_uri, data_root=storage.root).resolve_tracking_uri()
    if uri and not storage.is_local and uri == sqlite_store_uri(storage.root):
        log(f"no curation run: {storage!r} is an object store; set data_card.tracking_uri or $MLFLOW_TRACKING_URI")
        uri = None
    return Tracker(uri, config.experiment, config.mlflow_ui_url) if uri else None


@snapshot_asset(
    deps=[balanced_subset],
    kinds={"json", "markdown"},
    description="MetaCLIP data card of the snapshot: entry -> count before and after balancing, the funnel, "
    "bad records, head/tail tables and the cumulative-matches plot; logged as an MLflow run (params, funnel "
    "metrics, the card as artifacts, the curated set as an mlflow.data dataset) that the training run names.",
    check_specs=[check_spec(TOTALS_MATCH_PARQUET, "data_card", DESCRIPTIONS)],
)
def data_card(
    context: dg.AssetExecutionContext, config: DataCardConfig, curation_storage: CurationStorage
) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    tracker = curation_tracker(config, storage, context.log.warning)
    entries, sha = load_current_metadata(storage)
    table_schema = dg.TableSchema(
        columns=[
            dg.TableColumn("entry", "string"),
            dg.TableColumn("before", "int"),
            dg.TableColumn("after", "int"),
            dg.TableColumn("kept", "float"),
        ]
    )

    def one(snapshot: str) -> dg.MaterializeResult:
        r = steps.card_for_snapshot(storage, entries, sha, snapshot, NUM_SHARDS, NUM_BUCKETS)
        card = r.card
        if tracker:
            run = curation_tracking.log_curation_run(storage, snapshot, r, NUM_SHARDS, NUM_BUCKETS, tracker)
            context.log.info(f"curation run {run.run_id} ({run.seconds} s): {run.url}")
            mlflow = {"mlflow_run_url": dg.MetadataValue.url(run.url), "mlflow_run_id": run.run_id}
        else:
            curation_tracking.forget_curation_run(storage, snapshot, NUM_SHARDS, NUM_BUCKETS)
            mlflow = {"mlflow_run_id": "none (tracking off)"}
        return materialize_result(
            {
                "data_card": dg.MetadataValue.md(r.markdown_inline),
                "head_entries": dg.MetadataValue.table(
                    records=[dg.TableRecord(row) for row in card.head_table], schema=table_schema
                ),
                "funnel": dg.MetadataValue.json(r.funnel),
                "bad_records": dg.MetadataValue.json(r.bad_records),
                "other_skipped": dg.MetadataValue.json(r.other_skipped),
                "t": r.t,
                "tail_share_before": dg.MetadataValue.float(round(card.tail_share_before, 4)),
                "tail_share_after": dg.MetadataValue.float(round(card.tail_share_after, 4)),
                "entries_matched": card.entries_matched,
                "entries_curated": card.entries_curated,
                "datacard_json": dg.MetadataValue.path(r.card_uri),
                "plot": dg.MetadataValue.path(r.plot_uri),
                **mlflow,
            },
            [r.check],
        )

    return materialize_each(context, sorted(run_partition_keys(context)), one)
