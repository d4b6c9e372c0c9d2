"""Re-curation without a person: discover new CommonCrawl snapshots, download their WAT files, and let every
downstream asset follow by declarative automation.

- `cc_snapshot_sensor` reads the crawl index (`collinfo.json`), registers each new snapshot as a `cc_snapshot`
  partition and requests `cc_snapshot_job` (crawl_files -> crawl_pool) once per shard. Its cursor records the
  snapshots it handled, and each request carries a run key, so a tick never registers or requests twice.
- `crawl_files` (snapshot x shard) downloads this shard's WAT files listed in the snapshot's `wat.paths.gz` into
  `{crawl_root}/<snapshot>/`, where crawl_pool lists them. It is an asset, not a step hidden in the sensor's
  job, so each shard's download is visible, retried and resumed on its own, and the lineage shows where crawl
  files come from. Snapshots whose files are put in place by hand (the bundled sample, a local mirror) simply
  never materialize it: crawl_pool reads whatever is in the folder.
- Everything downstream of crawl_pool gets `AutomationCondition.eager()` (`with_automation`): matched_pool runs
  when its crawl_pool shard lands, entry_counts only once every shard of the snapshot has (eager waits while any
  dependency is missing or in progress), then balanced_subset, data_card, shards, checkpoint, eval.
  `metaclip_automation` evaluates the conditions and is RUNNING by default. Several partitions due in one tick
  go to one backfill, and the curation assets' single-run backfill policy (for `--partition-range`) makes each
  contiguous range of them one run: shards that land together are matched one after another in one step.
- `recurate_latest_schedule` re-runs crawl_pool for every shard of the most recently registered snapshot
  (weekly by default); automation carries the rest.

The discovery sensor and the schedule are STOPPED by default: discovery downloads terabytes from CommonCrawl,
so a developer's `dagster dev` must not start it by accident. Turn them on in the UI (Automation), with
`dagster sensor start cc_snapshot_sensor`, or by default with METACLIP_CC_SENSOR=on / METACLIP_RECURATE_SCHEDULE=on
(e.g. in the Helm values' env). A sensor takes no run config, so its settings come from the `crawl_index`
resource, whose defaults read the METACLIP_CRAWL_* / METACLIP_*_SNAPSHOT* / interval / cron environment variables
(names, defaults and meanings in `metaclip_assets/settings.py`; `python -m metaclip_assets.settings` lists them).
"""

import gzip
import json

import dagster as dg
from pydantic import Field

from metaclip_assets import settings
from metaclip_assets.crawl.index import (
    CrawlFetchError,
    CrawlIndexError,
    CrawlInfo,
    fetch_wat_files,
    load_collinfo,
    load_wat_paths,
    parse_wat_paths,
    select_new,
    wat_paths_source,
)
from metaclip_assets.defs.partitions import (
    NUM_SHARDS,
    SNAPSHOT_PARTITIONS_NAME,
    shard_partitions,
    snapshot_and_shard,
    snapshot_partitions,
    snapshot_shard_partitions,
)
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.progress import Every
from metaclip_assets.sharding import shard_of
from metaclip_assets.storage import Storage

PATHS_CACHE = "_wat.paths.gz"  # "_" prefix: Storage.list, and so crawl_pool, skips it


class CrawlIndexResource(dg.ConfigurableResource):
    """Where the crawl index and the crawl files come from, and how much of them to take."""

    index_url: str = Field(
        default_factory=settings.CRAWL_INDEX.raw, description="collinfo.json: URL (http, https, file) or local path"
    )
    base_url: str = Field(
        default_factory=settings.CRAWL_BASE_URL.raw,
        description="base of crawl-data/<id>/wat.paths.gz and of the paths it lists; URL or dir",
    )
    min_snapshot: str | None = Field(
        default_factory=settings.MIN_SNAPSHOT.raw, description="crawls older than this id are never registered"
    )
    max_new_snapshots_per_tick: int = Field(
        default_factory=settings.MAX_NEW_SNAPSHOTS.int,
        description="new snapshots registered per sensor tick, oldest first",
    )
    max_files_per_shard: int | None = Field(
        default_factory=settings.MAX_WAT_FILES_PER_SHARD.int,
        description="download at most this many WAT files per shard (the first in wat.paths.gz order)",
    )
    timeout_s: float = Field(default=30.0, description="connect/read timeout of every request")
    retries: int = Field(default=3, description="retries of a transient download error (backoff doubles)")
    download_workers: int = Field(default=2, description="concurrent downloads per shard")

    def crawls(self) -> list[CrawlInfo]:
        return load_collinfo(self.index_url, self.timeout_s)

    def wat_paths(self, snapshot: str, cache: Storage | None = None) -> list[str]:
        """The snapshot's WAT paths; with `cache` (the crawl root), the list is kept at
        <snapshot>/_wat.paths.gz so every shard (and a re-run) works from the same list."""
        key = f"{snapshot}/{PATHS_CACHE}"
        if cache is not None and cache.exists(key):
            return parse_wat_paths(cache.read_bytes(key), snapshot, cache.uri(key))
        paths = load_wat_paths(snapshot, self.base_url, self.timeout_s)
        if cache is not None:
            cache.write_bytes(key, gzip.compress("\n".join(paths).encode() + b"\n", mtime=0))
        return paths


# ---- the download asset ---------------------------------------------------------------------------------
@dg.asset(
    group_name="ingest",  # its own group: the curation graph stays readable at full detail
    partitions_def=snapshot_shard_partitions,
    kinds={"python", "gzip"},
    description="This shard's CommonCrawl WAT files (from the snapshot's wat.paths.gz), downloaded into "
    "<crawl_root>/<snapshot>/ where crawl_pool reads them. Resumable: complete files are skipped; every "
    "download is gzip-verified while it streams and written atomically.",
)
def crawl_files(
    context: dg.AssetExecutionContext, curation_storage: CurationStorage, crawl_index: CrawlIndexResource
) -> dg.MaterializeResult:
    snapshot, shard = snapshot_and_shard(context)
    crawl = curation_storage.crawl_storage()
    paths = crawl_index.wat_paths(snapshot, cache=crawl)
    mine = [p for p in paths if shard_of(p, NUM_SHARDS) == shard]  # the same bucket crawl_pool uses
    if crawl_index.max_files_per_shard is not None:
        mine = mine[: crawl_index.max_files_per_shard]
    context.log.info(
        f"{snapshot} shard {shard:03d}/{NUM_SHARDS}: {len(mine)} of {len(paths)} WAT files "
        f"from {crawl_index.base_url} to {crawl.uri(snapshot)}"
    )
    every = Every()

    def progress(result, total: int) -> None:
        if every.due():
            context.log.info(
                f"{len(result.downloaded) + len(result.skipped) + len(result.failed)}/{total} files, "
                f"{result.bytes_downloaded / 1e6:,.1f} MB downloaded, {len(result.failed)} failed"
            )

    result = fetch_wat_files(
        snapshot,
        mine,
        crawl_index.base_url,
        crawl,
        timeout=crawl_index.timeout_s,
        retries=crawl_index.retries,
        workers=crawl_index.download_workers,
        progress=progress,
    )
    if result.damaged:  # kept: crawl_pool salvages their sound records and counts the rest by reason
        context.log.warning(f"damaged at the source (kept): {result.damaged}")
    return dg.MaterializeResult(
        metadata={
            "files": len(result.files),
            "downloaded": len(result.downloaded),
            "already_complete": len(result.skipped),
            "bytes_downloaded": result.bytes_downloaded,
            "damaged_at_source": dg.MetadataValue.json(result.damaged),
            "snapshot_wat_files": len(paths),
            "paths_source": wat_paths_source(snapshot, crawl_index.base_url),
            "crawl_dir": dg.MetadataValue.path(crawl.uri(snapshot)),
            "file_names": dg.MetadataValue.json(result.files[:50]),
        }
    )


# ---- jobs, sensor, schedule -----------------------------------------------------------------------------
# One asset job = one partitions definition: the sensor's job stops at crawl_pool; the rest follows by automation.
cc_snapshot_job = dg.define_asset_job(
    "cc_snapshot_job",
    selection=dg.AssetSelection.assets("crawl_files", "crawl_pool"),
    description="Download a shard's WAT files and read its image-text pool (requested by cc_snapshot_sensor).",
)
recurate_job = dg.define_asset_job(
    "recurate_snapshot_job",
    selection=dg.AssetSelection.assets("crawl_pool"),
    description="Re-read a shard's pool from the crawl files already there; automation re-runs the rest.",
)


def _cursor(raw: str | None) -> set[str]:
    if not raw:
        return set()
    try:
        return set(json.loads(raw)["handled"])
    except (ValueError, KeyError, TypeError):
        return set()  # an unreadable cursor is rebuilt from the registered partitions and run keys


def shard_run_requests(snapshot: str, reason: str, run_key_prefix: str | None = None) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{snapshot}:{shard}" if run_key_prefix else None,
            partition_key=dg.MultiPartitionKey({"snapshot": snapshot, "shard": shard}),
            tags={"metaclip/snapshot": snapshot, "metaclip/reason": reason},
        )
        for shard in shard_partitions.get_partition_keys()
    ]


@dg.sensor(
    job=cc_snapshot_job,
    minimum_interval_seconds=settings.CC_SENSOR_INTERVAL_S.int(),
    default_status=(dg.DefaultSensorStatus.RUNNING if settings.CC_SENSOR.on() else dg.DefaultSensorStatus.STOPPED),
    description="Registers new CommonCrawl snapshots from the crawl index (collinfo.json) as cc_snapshot "
    "partitions and requests cc_snapshot_job for each of their shards.",
)
def cc_snapshot_sensor(context: dg.SensorEvaluationContext, crawl_index: CrawlIndexResource):
    handled = _cursor(context.cursor)
    try:
        ids = [c.id for c in crawl_index.crawls()]
    except (CrawlIndexError, CrawlFetchError) as e:
        context.log.error(f"crawl index unusable, nothing registered: {e}")
        return dg.SkipReason(f"crawl index {crawl_index.index_url} unusable: {e}")
    registered = set(context.instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME))
    # Registered by hand (metaclip-assets register-snapshot): someone else curates those; just remember them.
    handled |= registered & set(ids)
    try:
        candidates = select_new(ids, handled, crawl_index.min_snapshot, crawl_index.max_new_snapshots_per_tick)
    except CrawlIndexError as e:  # a bad min_snapshot setting
        context.log.error(str(e))
        return dg.SkipReason(f"bad sensor setting: {e}")
    new, waiting = [], ""
    for snapshot in candidates:
        # Registering a crawl whose file list is not published (yet) would only produce failing runs; and a
        # later crawl is not taken before it, so snapshots are always curated oldest first.
        try:
            n_files = len(load_wat_paths(snapshot, crawl_index.base_url, crawl_index.timeout_s))
        except (CrawlIndexError, CrawlFetchError) as e:
            waiting = f"{snapshot} not taken yet: {e}"
            context.log.warning(waiting)
            break
        context.log.info(f"new snapshot {snapshot}: {n_files:,} WAT files")
        new.append(snapshot)
    cursor = json.dumps({"handled": sorted(handled | set(new))})
    if not new:
        return dg.SensorResult(
            skip_reason=waiting
            or f"no new snapshot in {crawl_index.index_url} "
            f"({len(ids)} crawls, min {crawl_index.min_snapshot or 'none'})",
            cursor=cursor,
        )
    return dg.SensorResult(
        run_requests=[r for s in new for r in shard_run_requests(s, "new snapshot", run_key_prefix="cc")],
        dynamic_partitions_requests=[snapshot_partitions.build_add_request(new)],
        cursor=cursor,
    )


@dg.schedule(
    job=recurate_job,
    cron_schedule=settings.RECURATE_CRON.raw(),
    default_status=(
        dg.DefaultScheduleStatus.RUNNING if settings.RECURATE_SCHEDULE.on() else dg.DefaultScheduleStatus.STOPPED
    ),
    description="Re-curates the most recently registered snapshot: crawl_pool for every shard, then automation.",
)
def recurate_latest_schedule(context: dg.ScheduleEvaluationContext):
    registered = context.instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME)  # registration order
    if not registered:
        return dg.SkipReason("no cc_snapshot partition registered yet")
    return shard_run_requests(registered[-1], "weekly re-curation")


# ---- declarative automation -----------------------------------------------------------------------------
def with_automation(assets: list, root: str = "crawl_pool") -> list:
    """`assets` with `AutomationCondition.eager()` on everything downstream of `root` that has no condition
    of its own; root and everything upstream (metadata, crawl files) stay manual / sensor-driven."""
    downstream = dg.AssetSelection.assets(root).downstream(include_self=False).resolve(assets)
    out = []
    for a in assets:
        keys = [k for k in getattr(a, "keys", ()) if k in downstream and a.automation_conditions_by_key.get(k) is None]
        out.append(
            a.with_attributes(automation_condition={k: dg.AutomationCondition.eager() for k in keys}) if keys else a
        )
    return out


metaclip_automation_sensor = dg.AutomationConditionSensorDefinition(
    "metaclip_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.AUTOMATION_INTERVAL_S.int(),
    description="Evaluates the assets' automation conditions: downstream curation follows each landed shard.",
)

__all__ = [
    "CrawlIndexResource",
    "cc_snapshot_job",
    "cc_snapshot_sensor",
    "crawl_files",
    "metaclip_automation_sensor",
    "recurate_job",
    "recurate_latest_schedule",
    "shard_run_requests",
    "with_automation",
]
