"""Partitions: one dynamic partition per CommonCrawl snapshot, crossed with static shards of its files."""

import functools
from collections.abc import Callable

import dagster as dg

from metaclip_assets import settings
from metaclip_assets.sharding import shard_keys

SNAPSHOT_PARTITIONS_NAME = "cc_snapshot"
# The shard count is part of the partition definition, so it is fixed when the code location loads.
NUM_SHARDS = settings.num_shards()
# The snapshot steps reduce the matched shards in this many pair_id buckets (layout.curation_dir keys their outputs).
NUM_BUCKETS = settings.num_buckets()

snapshot_partitions = dg.DynamicPartitionsDefinition(name=SNAPSHOT_PARTITIONS_NAME)
shard_partitions = dg.StaticPartitionsDefinition(shard_keys(NUM_SHARDS))
snapshot_shard_partitions = dg.MultiPartitionsDefinition({"snapshot": snapshot_partitions, "shard": shard_partitions})

# A snapshot-level asset reads every shard of its snapshot.
all_shards_of_snapshot = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="snapshot")


def snapshot_and_shard(context: dg.AssetExecutionContext) -> tuple[str, int]:
    keys = context.partition_key.keys_by_dimension
    return keys["snapshot"], int(keys["shard"])


def split_key(key: dg.MultiPartitionKey) -> tuple[str, int]:
    return key.keys_by_dimension["snapshot"], int(key.keys_by_dimension["shard"])


# ---- runs over a partition range (`dagster asset materialize --partition-range`) ---------------------------
# The CLI takes a range only when every selected asset runs all its keys in one run (and one step). That policy
# also makes backfills and automation launch one run per contiguous range instead of one per key, which serialises
# the shards of a snapshot in one pod. So it is chosen when the code location loads: METACLIP_BACKFILL=range (the
# default: CLI ranges, CI, the embedded instance) or per_key (one run per key: every shard its own run/pod for
# backfills and automation; CLI ranges are then refused). k8s/helm-values.yaml sets per_key.
BACKFILL_MODES = {"range": dg.BackfillPolicy.single_run(), "per_key": dg.BackfillPolicy.multi_run(1)}


def backfill_policy_from_env(value: str | None = None) -> dg.BackfillPolicy:
    mode = (settings.backfill_mode() if value is None else value).strip() or settings.BACKFILL.default
    if mode not in BACKFILL_MODES:
        raise ValueError(
            f"{settings.BACKFILL.name}={mode!r}: expected one of {sorted(BACKFILL_MODES)} (range: one run per "
            "partition range, needed by `dagster asset materialize --partition-range`; per_key: one "
            "run per partition key, so that backfills and automation scale out shard by shard)"
        )
    return BACKFILL_MODES[mode]


one_run_per_range = backfill_policy_from_env()

# The curation assets' shared decorator arguments: their group, their partitions and the backfill policy above.
shard_asset = functools.partial(
    dg.asset, group_name="curation", partitions_def=snapshot_shard_partitions, backfill_policy=one_run_per_range
)
snapshot_asset = functools.partial(
    dg.asset, group_name="curation", partitions_def=snapshot_partitions, backfill_policy=one_run_per_range
)


def check_spec(name: str, asset: str, descriptions: dict[str, str], blocking: bool = True) -> dg.AssetCheckSpec:
    """The spec of a check computed in a plain module, with the description that module gives it; by default
    blocking (a failure stops the run's downstream steps)."""
    return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=descriptions[name])


def run_partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The keys of this run: one, or every key of the run's range (for snapshot x shard, the box of shards x
    snapshots between the ends). An inverted range selects nothing, which Dagster would record as one
    unpartitioned materialization: refused instead."""
    keys = list(context.partition_keys)
    if not keys:
        r = context.partition_key_range
        raise ValueError(
            f"partition range {r.start}...{r.end} selects no partition: in every dimension the start "
            "must not come after the end (shards in number order, snapshots in registration order, "
            "see `metaclip-assets list-snapshots`)"
        )
    return keys


def materialize_each(
    context: dg.AssetExecutionContext, keys: list[str], materialize_one: Callable[[str], dg.MaterializeResult]
) -> dg.MaterializeResult:
    """`materialize_one(key)` for every key, one after another. One key: its result as is. Several: each
    partition's materialization gets its own metadata, and each check one result over all of them (a step emits
    a check once; the checks are not partitioned)."""
    if len(keys) == 1:
        return materialize_one(keys[0])
    checks: dict[str, dict[str, dg.AssetCheckResult]] = {}
    for i, key in enumerate(keys, 1):
        context.log.info(f"partition {i}/{len(keys)}: {key}")
        result = materialize_one(key)
        context.add_asset_metadata(result.metadata or {}, partition_key=key)
        for check in result.check_results:
            checks.setdefault(check.check_name, {})[key] = check
    return dg.MaterializeResult(check_results=[merge_checks(name, by_key) for name, by_key in checks.items()])


def merge_checks(check_name: str, by_key: dict[str, dg.AssetCheckResult]) -> dg.AssetCheckResult:
    """Passed if every partition passed; a failure is ERROR (blocking) if any partition failed with ERROR."""
    failed = sorted(k for k, r in by_key.items() if not r.passed)
    error = any(by_key[k].severity == dg.AssetCheckSeverity.ERROR for k in failed)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if error or not failed else dg.AssetCheckSeverity.WARN,
        description=f"{len(by_key) - len(failed)} of {len(by_key)} partitions passed",
        metadata={
            "partitions": len(by_key),
            "failed_partitions": dg.MetadataValue.json(failed),
            "by_partition": dg.MetadataValue.json(
                {
                    k: {
                        "passed": r.passed,
                        **({} if r.passed else {"severity": r.severity.value}),
                        **{m: v.value for m, v in r.metadata.items()},
                    }
                    for k, r in by_key.items()
                }
            ),
        },
    )
