"""`metaclip-assets curate SNAPSHOT`: curate a registered snapshot through Dagster in a handful of runs.

In-process (default): every step is a run of the code location's implicit asset job executed in this process
(`JobDefinition.execute_in_process`, what `dagster asset materialize` does with the in_process executor), recorded
in the instance like any other run. The per-shard assets take every shard of the snapshot in one run when their
backfill policy is single_run (METACLIP_BACKFILL=range, the default): the crawl files of all shards are read in one
run and one matcher serves every shard; with per_key, one run per shard key. So a snapshot costs 6 runs (5 when the
metadata is already there) whatever its shard count, and the definitions load once.

`launch_backfill` (--launch): the same assets and partitions as one asset backfill stored in the instance; the
daemon (`dagster dev`, or `dagster-daemon run` in production) launches its runs through the instance's run
coordinator and launcher, in dependency order, one run per partition range (range) or per key (per_key). Dagster has
no public Python call that stores an asset backfill (the UI goes through GraphQL), so this uses
`PartitionBackfill.from_asset_graph_subset` + `instance.add_backfill` of Dagster 1.13 (test_curate_cli checks it).

The shard and bucket counts are those of the loaded code location (METACLIP_NUM_SHARDS / METACLIP_NUM_BUCKETS):
set them before importing this module (the CLI's --shards / --buckets do).
"""

from __future__ import annotations

import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from metaclip_assets import layout, settings
from metaclip_assets.defs.partitions import NUM_BUCKETS, NUM_SHARDS, SNAPSHOT_PARTITIONS_NAME, shard_partitions

METADATA = "metadata_entries"
SHARD_STEPS = ("crawl_pool", "matched_pool")
SNAPSHOT_STEPS = ("entry_counts", "balanced_subset", "data_card")
Print = Callable[[str], None]
# The runs' console shows warnings and errors only, so the figures stay readable; every event is in the run log.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class CurateError(Exception):
    """A refusal with what to do instead (the CLI prints it and exits 1)."""


# ---- measuring ----------------------------------------------------------------------------------------------
def cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (e.g. spawned matcher workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _vm_hwm_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0), so each step reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    hwm = _vm_hwm_mib()
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StepFigures:
    step: str
    runs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    pairs: int | None = None  # the pairs this step read (None: not a pair step)
    peak_is_own: bool = True  # False where the peak could not be reset: the process's peak so far

    @property
    def pairs_per_cpu_s(self) -> float | None:
        return self.pairs / self.cpu_s if self.pairs is not None and self.cpu_s > 0 else None


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def whole_process(label: str, runs: int, pairs: int, steps: Sequence[StepFigures], peak_before: float) -> StepFigures:
    """This process from its start (interpreter, imports, definitions load, instance, every run): the figure that
    counts the fixed costs too. Its peak is the largest of the steps' and of what came before them."""
    return StepFigures(
        label,
        runs=runs,
        wall_s=process_age_s(),
        cpu_s=cpu_s(),
        peak_rss_mib=max([peak_before, *(s.peak_rss_mib for s in steps)]),
        pairs=pairs,
    )


@contextmanager
def measured(step: str) -> Iterator[StepFigures]:
    figures = StepFigures(step)
    figures.peak_is_own = _reset_peak()
    wall, cpu = time.perf_counter(), cpu_s()
    yield figures
    figures.wall_s, figures.cpu_s = time.perf_counter() - wall, cpu_s() - cpu
    figures.peak_rss_mib = peak_rss_mib()


def figures_table(steps: Sequence[StepFigures], total: StepFigures | None = None) -> str:
    def fmt(f: StepFigures) -> str:
        pairs = f"{f.pairs:>11,}" if f.pairs is not None else f"{'-':>11}"
        rate = f"{f.pairs_per_cpu_s:>13,.0f}" if f.pairs_per_cpu_s is not None else f"{'-':>13}"
        peak = f"{f.peak_rss_mib:>9,.0f}{'' if f.peak_is_own else '*'}"
        return f"{f.step:<34} {f.runs:>4} {f.wall_s:>8.2f} {f.cpu_s:>8.2f} {peak:<10} {pairs} {rate}"

    head = f"{'step':<34} {'runs':>4} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9}  {'pairs':>11} {'pairs/CPU-s':>13}"
    rows = [head, *(fmt(f) for f in steps)]
    if total is not None:
        rows += [fmt(total)]
    return "\n".join(rows)


# ---- the plan -----------------------------------------------------------------------------------------------
def _key(name: str) -> dg.AssetKey:
    return dg.AssetKey(name)


def shard_keys_of(snapshot: str) -> list[str]:
    """The multi-partition keys of every shard of `snapshot`, in shard order (`shard|snapshot`)."""
    return [dg.MultiPartitionKey({"snapshot": snapshot, "shard": s}) for s in shard_partitions.get_partition_keys()]


def run_batches(defs: dg.Definitions, asset: str, keys: Sequence[str]) -> list[list[str]]:
    """`keys` split into runs the way the asset's backfill policy splits a backfill: one run for all of them
    (single_run), or runs of at most max_partitions_per_run keys (multi_run)."""
    policy = defs.resolve_asset_graph().get(_key(asset)).backfill_policy
    size = (policy.max_partitions_per_run if policy else 1) or len(keys)
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


def _range_tags(keys: Sequence[str]) -> dict[str, str]:
    # Consecutive keys of one snapshot (shard order): the range start...end selects exactly these.
    return {ASSET_PARTITION_RANGE_START_TAG: str(keys[0]), ASSET_PARTITION_RANGE_END_TAG: str(keys[-1])}


def metadata_run_config(metadata_file: str | None, metadata_config: dict | None) -> dict | None:
    """The metadata_entries run config for --metadata FILE / --metadata-config; None: keep the current metadata."""
    if metadata_file is None and metadata_config is None:
        return None
    config = dict(metadata_config or {})
    if "ops" in config:  # the run-config form (scripts/sample-metadata-config.json)
        config = dict(config["ops"].get(METADATA, {}).get("config", {}))
    if metadata_file is not None:
        path = Path(metadata_file)
        if not path.is_file():
            raise CurateError(f"--metadata {metadata_file}: no such file (a JSON list of entry strings)")
        config["metadata_json"] = str(path.resolve())
    return {"ops": {METADATA: {"config": config}}}


def balance_run_config(t: float | None) -> dict:
    return {} if t is None else {"ops": {"balanced_subset": {"config": {"t": t}}}}


def require_registered(instance: dg.DagsterInstance, snapshot: str, register: bool) -> bool:
    """True if this call registered it."""
    snapshot = layout.snapshot_id(snapshot)
    if instance.has_dynamic_partition(SNAPSHOT_PARTITIONS_NAME, snapshot):
        return False
    if not register:
        raise CurateError(
            f"snapshot {snapshot} is not registered: run `metaclip-assets register-snapshot {snapshot}` "
            "(or add --register)"
        )
    instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, [snapshot])
    return True


def _has_current_metadata(defs: dg.Definitions) -> bool:
    storage = defs.resources["curation_storage"].storage()
    return storage.exists(layout.METADATA_CURRENT)


@dataclass(frozen=True)
class Request:
    """What to curate (the command's arguments)."""

    snapshot: str
    metadata_file: str | None = None  # --metadata: a ready metadata.json
    metadata_config: dict | None = None  # --metadata-config: metadata_entries' config or run config
    t: float | None = None  # balanced_subset's t (None: its default)
    register: bool = False  # register the snapshot if it is not yet


@dataclass(frozen=True)
class Plan:
    snapshot: str
    metadata: dict | None  # metadata_entries' run config; None: the current metadata is kept
    balance: dict  # balanced_subset's run config
    registered: bool  # by this call


def prepare(defs: dg.Definitions, instance: dg.DagsterInstance, request: Request) -> Plan:
    """Checks the arguments (CurateError says what to do) before anything runs, then registers if asked."""
    meta = metadata_run_config(request.metadata_file, request.metadata_config)
    registered = require_registered(instance, request.snapshot, request.register)
    if meta is None and not _has_current_metadata(defs):
        meta = {}  # no metadata yet: build it with the defaults (WordNet + the Wikipedia files under the data root)
    return Plan(request.snapshot, meta, balance_run_config(request.t), registered)


def _pairs(result: dg.ExecuteInProcessResult, asset: str, field_: str) -> int:
    return sum(
        int(m.metadata[field_].value)
        for m in result.asset_materializations_for_node(asset)
        if field_ in m.metadata and m.partition is not None
    )


@dataclass
class Curated:
    snapshot: str
    num_shards: int
    num_buckets: int
    steps: list[StepFigures]
    run_ids: list[str]
    pool_pairs: int
    matched_pairs: int
    curated_pairs: int
    datacard: str
    registered: bool = False

    @property
    def runs(self) -> int:
        return len(self.run_ids)


# ---- in-process ---------------------------------------------------------------------------------------------
def curate(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: Request, log: Print = lambda _: None
) -> Curated:
    """Materialize metadata_entries (if there is no current metadata or one is given), crawl_pool and
    matched_pool for every shard, then entry_counts, balanced_subset and data_card, each step in as few runs as
    its backfill policy allows, all in this process. Raises CurateError (what to do) before running anything
    when the snapshot is unknown, and dg.DagsterError-derived exceptions when a run fails."""
    plan = prepare(defs, instance, request)
    snapshot = plan.snapshot
    repo = defs.get_repository_def()
    steps: list[StepFigures] = []
    results: dict[str, list[dg.ExecuteInProcessResult]] = {}

    def step(asset: str, batches: list[list[str]], run_config: dict, label: str) -> StepFigures:
        job = repo.get_implicit_job_def_for_assets([_key(asset)])
        with measured(label) as figures:
            for keys in batches:
                result = job.execute_in_process(
                    run_config={**run_config, **QUIET_CONSOLE},
                    instance=instance,
                    partition_key=keys[0] if len(keys) == 1 else None,
                    asset_selection=[_key(asset)],
                    tags={**(_range_tags(keys) if len(keys) > 1 else {}), "metaclip/curate": snapshot},
                )
                results.setdefault(asset, []).append(result)
            figures.runs = len(batches)
        steps.append(figures)
        return figures

    def metadata_of(asset: str) -> list[dict]:
        return [
            {k: v.value for k, v in m.metadata.items()}
            for r in results[asset]
            for m in r.asset_materializations_for_node(asset)
        ]

    def done(figures: StepFigures) -> None:
        log(figures_table([figures]).splitlines()[1])

    log(figures_table([]))
    if plan.metadata is not None:
        done(step(METADATA, [[]], plan.metadata, METADATA))

    shard_keys = shard_keys_of(snapshot)
    for asset, pairs_field in zip(SHARD_STEPS, ("dagster/row_count", "pairs_in")):
        figures = step(asset, run_batches(defs, asset, shard_keys), {}, f"{asset} ({len(shard_keys)} shards)")
        figures.pairs = sum(int(md[pairs_field]) for md in metadata_of(asset) if pairs_field in md)
        done(figures)
    pool_pairs = steps[-2].pairs or 0

    matched = 0
    for asset in SNAPSHOT_STEPS:
        figures = step(asset, [[snapshot]], plan.balance if asset == "balanced_subset" else {}, asset)
        matched = matched or int(metadata_of("entry_counts")[0]["matched_pairs"])
        figures.pairs = matched  # each snapshot step reads the matched pairs
        done(figures)
    [balanced], [card] = metadata_of("balanced_subset"), metadata_of("data_card")
    return Curated(
        snapshot=snapshot,
        num_shards=NUM_SHARDS,
        num_buckets=NUM_BUCKETS,
        steps=steps,
        run_ids=[r.run_id for rs in results.values() for r in rs],
        pool_pairs=pool_pairs,
        matched_pairs=matched,
        curated_pairs=int(balanced["curated_pairs"]),
        datacard=str(card["datacard_json"]),
        registered=plan.registered,
    )


# ---- through the instance's run launcher --------------------------------------------------------------------
def launch_backfill(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: Request
) -> tuple[str, AssetGraphSubset, bool]:
    """Store one asset backfill of the snapshot's curation (metadata_entries if needed, every shard of
    crawl_pool and matched_pool, the three snapshot assets); the daemon launches its runs. Returns
    (backfill id, its targets, whether the snapshot was registered by this call)."""
    plan = prepare(defs, instance, request)
    snapshot = plan.snapshot
    graph = defs.resolve_asset_graph()
    targets = {AssetKeyPartitionKey(_key(a), k) for a in SHARD_STEPS for k in shard_keys_of(snapshot)}
    targets |= {AssetKeyPartitionKey(_key(a), snapshot) for a in SNAPSHOT_STEPS}
    if plan.metadata is not None:
        targets.add(AssetKeyPartitionKey(_key(METADATA), None))
    subset = AssetGraphSubset.from_asset_partition_set(targets, graph)
    # One run config for every run of the backfill: config of assets a run does not select is ignored.
    run_config = {"ops": {**(plan.metadata or {}).get("ops", {}), **plan.balance.get("ops", {})}}
    backfill_id = uuid.uuid4().hex[:8]
    instance.add_backfill(
        PartitionBackfill.from_asset_graph_subset(
            backfill_id=backfill_id,
            backfill_timestamp=time.time(),
            tags={"metaclip/curate": snapshot},
            dynamic_partitions_store=instance,
            asset_graph_subset=subset,
            title=f"curate {snapshot}",
            description=f"metaclip-assets curate {snapshot} --launch ({NUM_SHARDS} shards, {NUM_BUCKETS} buckets)",
            run_config=run_config if run_config["ops"] else None,
        )
    )
    return backfill_id, subset, plan.registered


# ---- the command --------------------------------------------------------------------------------------------
def command(instance: dg.DagsterInstance, request: Request, launch: bool = False, log: Print = print) -> None:
    """`metaclip-assets curate`: curate (or with `launch`, store the backfill of) the snapshot with the code
    location's definitions, printing what it did."""
    from metaclip_assets.definitions import defs  # here: the module stays importable without loading them

    snapshot = request.snapshot
    where = f"{NUM_SHARDS} shards, {NUM_BUCKETS} buckets, data root {settings.data_root()}"
    if launch:
        backfill_id, subset, registered = launch_backfill(defs, instance, request)
        log(
            f"{'registered ' + snapshot + '; ' if registered else ''}backfill {backfill_id} stored ({where}): "
            f"{subset.num_partitions_and_non_partitioned_assets} asset partitions of "
            f"{sorted(k.to_user_string() for k in subset.asset_keys)}.\nThe daemon launches its runs through the "
            "instance's run coordinator and launcher (`dagster dev`, or `dagster-daemon run` in production, with "
            "this DAGSTER_HOME and the same METACLIP_* settings); follow it in the UI under Overview > Backfills."
        )
        return
    log(f"curate {snapshot} through Dagster, in this process ({where})")
    peak_before = peak_rss_mib()
    r = curate(defs, instance, request, log)
    total = whole_process("whole command (start to end)", r.runs, r.pool_pairs, r.steps, peak_before)
    log(figures_table([total]).splitlines()[1])
    log(
        f"{'registered it; ' if r.registered else ''}curated {r.curated_pairs:,} of {r.matched_pairs:,} matched "
        f"pairs ({r.pool_pairs:,} read) in {r.runs} runs; data card {r.datacard}\n"
        "(CPU: this process and its children; peak: this process's RSS, reset before each step)"
    )
