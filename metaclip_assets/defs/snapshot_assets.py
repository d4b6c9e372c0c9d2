"""Per-snapshot assets: entry counts over all shards, the balanced subset, and the data card."""

import base64
from collections import Counter

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.curation.datacard import (
    build_datacard,
    cumulative_plot_png,
    datacard_markdown,
    entry_count_mapping,
)
from metaclip_assets.curation.stages import balance, count_entries, csr, merge_shards
from metaclip_assets.defs.metadata_asset import load_current_metadata
from metaclip_assets.defs.partitions import (
    NUM_SHARDS,
    SNAPSHOT_PARTITIONS_NAME,
    all_shards_of_snapshot,
    materialize_each,
    one_run_per_range,
    run_partition_keys,
    snapshot_partitions,
)
from metaclip_assets.defs.pool_assets import matched_pool
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.storage import Storage


def _shard_files(storage: Storage, snapshot: str, key_fn) -> list[str]:
    keys = [key_fn(snapshot, shard, NUM_SHARDS) for shard in range(NUM_SHARDS)]
    missing = [k for k in keys if not storage.exists(k)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {NUM_SHARDS} shards of {snapshot} are not materialized yet ({missing[:4]}...): "
            f"materialize crawl_pool and matched_pool for every shard of {snapshot} first"
        )
    return keys


@dg.asset(
    group_name="curation",
    partitions_def=snapshot_partitions,
    backfill_policy=one_run_per_range,
    deps=[dg.AssetDep(matched_pool, partition_mapping=all_shards_of_snapshot)],
    kinds={"numpy"},
    description="uint64 match count per metadata entry over the whole snapshot (all shards, cross-shard "
    "duplicates removed), plus the cumulative counts over all snapshots up to this one (TiC-style).",
    check_specs=[
        dg.AssetCheckSpec(
            "counts_sum_to_matches",
            asset="entry_counts",
            blocking=True,
            description="Sum of counts == number of (pair, entry) matches in the matched set.",
        )
    ],
)
def entry_counts(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    entries, sha = load_current_metadata(storage)
    # Oldest first (ids sort by date): a snapshot's cumulative counts include the earlier ones of the same run.
    return materialize_each(
        context,
        sorted(run_partition_keys(context)),
        lambda snapshot: _count_snapshot(context, storage, entries, sha, snapshot),
    )


def _count_snapshot(
    context: dg.AssetExecutionContext, storage: Storage, entries: list[str], sha: str, snapshot: str
) -> dg.MaterializeResult:
    frames = []
    for key in _shard_files(storage, snapshot, layout.matched_key):
        stats = storage.read_json(key.replace(".parquet", ".stats.json"))
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

    # Cumulative counts: this snapshot plus every earlier registered snapshot counted with the same metadata.
    registered = sorted(context.instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME))
    cumulative, included = counts.copy(), [snapshot]
    for earlier in (s for s in registered if s < snapshot):
        summary_key = layout.counts_summary_key(earlier)
        if storage.exists(summary_key) and storage.read_json(summary_key)["metadata_sha256"] == sha:
            cumulative += storage.read_npy(layout.counts_key(earlier))
            included.append(earlier)
        else:
            context.log.warning(f"cumulative counts skip {earlier}: no entry counts with metadata {sha[:12]}")
    storage.write_npy(layout.counts_key(snapshot, cumulative=True), cumulative)

    pair_entry_total = int(merged["entry_ids"].list.len().sum() or 0)
    summary = {
        "snapshot": snapshot,
        "metadata_sha256": sha,
        "entries": len(entries),
        "matched_pairs": len(merged),
        "cross_shard_duplicates": duplicates,
        "pair_entry_matches": pair_entry_total,
        "entries_matched": int((counts > 0).sum()),
        "cumulative_snapshots": sorted(included),
    }
    storage.write_json(layout.counts_summary_key(snapshot), summary, indent=2)

    # The check re-reads what was written, so a broken write or a stale file fails it.
    stored = storage.read_npy(layout.counts_key(snapshot))
    reread_total = int(
        storage.read_parquet(layout.merged_matched_key(snapshot), columns=["entry_ids"])["entry_ids"].list.len().sum()
        or 0
    )
    check = dg.AssetCheckResult(
        check_name="counts_sum_to_matches",
        passed=bool(stored.dtype == np.uint64 and int(stored.sum()) == reread_total),
        metadata={"sum_of_counts": int(stored.sum()), "pair_entry_matches": reread_total, "dtype": str(stored.dtype)},
    )
    top = np.argsort(-counts.astype(np.int64), kind="stable")[:10]
    return dg.MaterializeResult(
        metadata={
            "matched_pairs": len(merged),
            "cross_shard_duplicates": duplicates,
            "pair_entry_matches": pair_entry_total,
            "entries_matched": summary["entries_matched"],
            "cumulative_snapshots": dg.MetadataValue.json(sorted(included)),
            "top_entries": dg.MetadataValue.json({entries[i]: int(counts[i]) for i in top if counts[i] > 0}),
            "matched_dedup_path": dg.MetadataValue.path(merged_uri),
        },
        check_results=[check],
    )


class BalanceConfig(dg.Config):
    t: float = Field(default=20_000.0, description="MetaCLIP's threshold: entries with count > t are sub-sampled.")
    seed: int = Field(default=0, description="Balancing draws are a hash of (pair, entry, seed): same seed, same set.")
    count_mode: str = Field(default="snapshot", description="'snapshot' or 'cumulative' (all snapshots up to this).")


@dg.asset(
    group_name="curation",
    partitions_def=snapshot_partitions,
    backfill_policy=one_run_per_range,
    deps=[entry_counts],
    kinds={"polars", "parquet"},
    description="The MetaCLIP-balanced subset: a pair is kept if any matched entry samples it with "
    "probability t / max(count, t). Deterministic per pair and seed, independent of sharding.",
    check_specs=[
        dg.AssetCheckSpec(
            "curated_subset_of_matched",
            asset="balanced_subset",
            blocking=True,
            description="Every curated pair is in the matched set, with the same entries.",
        )
    ],
)
def balanced_subset(
    context: dg.AssetExecutionContext, config: BalanceConfig, curation_storage: CurationStorage
) -> dg.MaterializeResult:
    if config.count_mode not in ("snapshot", "cumulative"):
        raise ValueError(f"count_mode must be 'snapshot' or 'cumulative', got {config.count_mode!r}")
    storage = curation_storage.storage()
    return materialize_each(
        context,
        sorted(run_partition_keys(context)),
        lambda snapshot: _balance_snapshot(context, config, storage, snapshot),
    )


def _balance_snapshot(
    context: dg.AssetExecutionContext, config: BalanceConfig, storage: Storage, snapshot: str
) -> dg.MaterializeResult:
    matched = storage.read_parquet(layout.merged_matched_key(snapshot))
    counts = storage.read_npy(layout.counts_key(snapshot, cumulative=config.count_mode == "cumulative"))
    curated, _, stats = balance(matched, counts, t=config.t, seed=config.seed)
    uri = storage.write_parquet(layout.balanced_key(snapshot), curated)
    summary = {
        **stats.as_dict(),
        "count_mode": config.count_mode,
        "snapshot": snapshot,
        "metadata_sha256": storage.read_json(layout.counts_summary_key(snapshot))["metadata_sha256"],
    }
    storage.write_json(layout.balanced_summary_key(snapshot), summary, indent=2)
    context.log.info(f"balanced: {summary}")

    reread = storage.read_parquet(layout.balanced_key(snapshot), columns=["url", "text", "pair_id", "entry_ids"])
    joined = reread.join(
        matched.select(["url", "text", "pair_id", "entry_ids"]),
        on=["url", "text", "pair_id"],
        how="left",
        suffix="_matched",
    )
    outside = joined.filter(
        pl.col("entry_ids_matched").is_null() | (pl.col("entry_ids") != pl.col("entry_ids_matched"))
    )
    check = dg.AssetCheckResult(
        check_name="curated_subset_of_matched",
        passed=len(outside) == 0,
        metadata={"curated": len(reread), "not_in_matched": len(outside)},
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(curated),
            "path": dg.MetadataValue.path(uri),
            "t": config.t,
            "seed": config.seed,
            "count_mode": config.count_mode,
            "matched_pairs": stats.matched,
            "curated_pairs": stats.curated,
            "expected_curated": dg.MetadataValue.float(round(stats.expected_curated, 2)),
            "kept_share": dg.MetadataValue.float(round(stats.curated / stats.matched, 4) if stats.matched else 0.0),
        },
        check_results=[check],
    )


@dg.asset(
    group_name="curation",
    partitions_def=snapshot_partitions,
    backfill_policy=one_run_per_range,
    deps=[balanced_subset],
    kinds={"json", "markdown"},
    description="MetaCLIP data card of the snapshot: entry -> count before and after balancing, the funnel, "
    "bad records, head/tail tables and the cumulative-matches plot.",
    check_specs=[
        dg.AssetCheckSpec(
            "totals_match_parquet",
            asset="data_card",
            blocking=True,
            description="The card's totals equal the row counts of the parquet files.",
        )
    ],
)
def data_card(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    entries, sha = load_current_metadata(storage)
    return materialize_each(
        context,
        sorted(run_partition_keys(context)),
        lambda snapshot: _card_for_snapshot(storage, entries, sha, snapshot),
    )


def _card_for_snapshot(storage: Storage, entries: list[str], sha: str, snapshot: str) -> dg.MaterializeResult:
    summary = storage.read_json(layout.balanced_summary_key(snapshot))
    counts_summary = storage.read_json(layout.counts_summary_key(snapshot))
    curated = storage.read_parquet(layout.balanced_key(snapshot), columns=["entry_ids"])
    counts_before = storage.read_npy(layout.counts_key(snapshot))
    balance_counts = storage.read_npy(layout.counts_key(snapshot, cumulative=summary["count_mode"] == "cumulative"))
    _, curated_ids = csr(curated)
    counts_after = np.bincount(curated_ids, minlength=len(entries)).astype(np.uint64)

    pool_stats = [storage.read_json(k) for k in _shard_files(storage, snapshot, layout.pool_stats_key)]
    match_stats = [storage.read_json(k) for k in _shard_files(storage, snapshot, layout.matched_stats_key)]
    bad: Counter[str] = Counter()
    benign: Counter[str] = Counter()  # not errors: non-HTML captures, links without text, data: URIs
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
    folder = layout.datacard_dir(snapshot)
    png = cumulative_plot_png(counts_before, counts_after, summary["t"], f"{snapshot}: cumulative matches")
    plot_uri = storage.write_bytes(f"{folder}/cumulative_matches.png", png)
    card_uri = storage.write_json(f"{folder}/datacard.json", entry_count_mapping(entries, counts_after))
    storage.write_json(f"{folder}/entry_counts_before.json", entry_count_mapping(entries, counts_before))
    storage.write_json(f"{folder}/summary.json", card.summary(), indent=2)
    storage.write_text(f"{folder}/datacard.md", datacard_markdown(card, plot_uri="cumulative_matches.png"))

    # Totals are checked against the parquet files read back, not against the numbers computed above.
    matched_rows = len(storage.read_parquet(layout.merged_matched_key(snapshot), columns=["pair_id"]))
    curated_rows = len(storage.read_parquet(layout.balanced_key(snapshot), columns=["pair_id"]))
    card_after_total = sum(storage.read_json(f"{folder}/datacard.json").values())
    written = storage.read_json(f"{folder}/summary.json")["funnel"]
    check = dg.AssetCheckResult(
        check_name="totals_match_parquet",
        passed=written["matched_pairs"] == matched_rows
        and written["curated_pairs"] == curated_rows
        and card_after_total == len(curated_ids),
        metadata={
            "card_matched": written["matched_pairs"],
            "parquet_matched": matched_rows,
            "card_curated": written["curated_pairs"],
            "parquet_curated": curated_rows,
            "card_entry_total": card_after_total,
            "parquet_entry_total": len(curated_ids),
        },
    )
    inline_plot = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    table_schema = dg.TableSchema(
        columns=[
            dg.TableColumn("entry", "string"),
            dg.TableColumn("before", "int"),
            dg.TableColumn("after", "int"),
            dg.TableColumn("kept", "float"),
        ]
    )
    return dg.MaterializeResult(
        metadata={
            "data_card": dg.MetadataValue.md(datacard_markdown(card, plot_uri=inline_plot)),
            "head_entries": dg.MetadataValue.table(
                records=[dg.TableRecord(r) for r in card.head_table], schema=table_schema
            ),
            "funnel": dg.MetadataValue.json(funnel),
            "bad_records": dg.MetadataValue.json(dict(bad)),
            "other_skipped": dg.MetadataValue.json(dict(benign)),
            "t": summary["t"],
            "tail_share_before": dg.MetadataValue.float(round(card.tail_share_before, 4)),
            "tail_share_after": dg.MetadataValue.float(round(card.tail_share_after, 4)),
            "entries_matched": card.entries_matched,
            "entries_curated": card.entries_curated,
            "datacard_json": dg.MetadataValue.path(card_uri),
            "plot": dg.MetadataValue.path(plot_uri),
        },
        check_results=[check],
    )
