"""Image acquisition as Dagster assets: a snapshot's balanced subset -> webdataset tar shards, and a report.

Thin wiring around the plain-Python `metaclip_assets.acquisition`:
- `webdataset_shards` (snapshot x shard) runs `acquisition.steps.acquire_shard`: this shard's curated rows (split
  by image, see that module) into `<data_root>/shards/<snapshot>/` (`<snapshot>-<shard>-<n>.tar`,
  `<snapshot>-<shard>.index.parquet`, `.failures.parquet`), the folder the training asset globs. A re-run skips
  complete tars.
- `acquisition_report` (snapshot) runs `acquisition.report.write_report`: every shard aggregated into the data
  card folder and the UI.
"""

# No `from __future__ import annotations`: dagster 1.13.27 cannot resolve a string annotation on `config`.
from dataclasses import fields

import dagster as dg
from pydantic import Field

from metaclip_assets.acquisition.checks import ACCOUNTS_FOR_CURATED_SUBSET, DESCRIPTIONS, NOTHING_LOST, SHARDS_READABLE
from metaclip_assets.acquisition.report import write_report
from metaclip_assets.acquisition.source import ImageSource
from metaclip_assets.acquisition.steps import SOURCE_DEFAULTS, ShardSettings, SourceSettings, acquire_shard
from metaclip_assets.defs.partitions import (
    NUM_BUCKETS,
    NUM_SHARDS,
    all_shards_of_snapshot,
    check_spec,
    snapshot_and_shard,
    snapshot_partitions,
    snapshot_shard_partitions,
)
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.results import materialize_result
from metaclip_assets.defs.snapshot_assets import balanced_subset
from metaclip_assets.storage import Storage


# ---- where image bytes come from ----------------------------------------------------------------------------
class ImageSourceResource(dg.ConfigurableResource):
    """`kind: warc` replays image responses from WARC files (offline, archived crawls); `kind: http` fetches
    from the web with the SSRF-safe, polite fetcher. Switching is a config change."""

    kind: str = Field(
        default=SOURCE_DEFAULTS.kind, description="'warc' (replay from WARC files) or 'http' (fetch from the web)"
    )
    warc_globs: list[str] = Field(
        default=list(SOURCE_DEFAULTS.warc_globs),
        description="warc: WARC files holding the image responses; relative to the data root or absolute; "
        "{snapshot} is replaced by the partition's snapshot.",
    )
    workers: int | None = Field(
        default=SOURCE_DEFAULTS.workers,
        description="fetch threads; default: the CPUs the pod may use (warc) or 32 (http, network bound). Decodes "
        "at once are fewer where memory requires (METACLIP_DECODE_MEMORY_FRACTION of the cgroup memory limit)",
    )
    max_bytes: int = Field(default=SOURCE_DEFAULTS.max_bytes, description="largest image body accepted")
    timeout_s: float = Field(
        default=SOURCE_DEFAULTS.timeout_s, description="http: total deadline per request (DNS+connect+read)"
    )
    max_retries: int = Field(
        default=SOURCE_DEFAULTS.max_retries, description="http: retries of transient errors (timeouts, 5xx, 429)"
    )
    backoff_s: float = SOURCE_DEFAULTS.backoff_s
    max_backoff_s: float = SOURCE_DEFAULTS.max_backoff_s
    max_redirects: int = SOURCE_DEFAULTS.max_redirects
    max_connections: int = Field(default=SOURCE_DEFAULTS.max_connections, description="http: open connections overall")
    max_per_host: int = Field(
        default=SOURCE_DEFAULTS.max_per_host, description="http: open connections per host (politeness)"
    )
    min_host_interval_s: float = Field(
        default=SOURCE_DEFAULTS.min_host_interval_s,
        description="http: least seconds between requests to one host (robots.txt Crawl-delay raises it per host)",
    )
    max_wait_s: float = Field(
        default=SOURCE_DEFAULTS.max_wait_s,
        description="http: longest a request waits for its host (Crawl-delay, Retry-After); longer: rate_limited",
    )
    respect_robots: bool = Field(
        default=SOURCE_DEFAULTS.respect_robots,
        description="http: fetch each host's robots.txt once per run and skip what it disallows for metaclip-assets",
    )
    contact_url: str = Field(
        default=SOURCE_DEFAULTS.contact_url,
        description="http: where site owners reach whoever runs the crawl; sent in the User-Agent. Set your own",
    )
    user_agent: str | None = Field(
        default=SOURCE_DEFAULTS.user_agent,
        description="http: full User-Agent override; default 'metaclip-assets/<version> (+<contact_url>; ...)'",
    )

    def settings(self) -> SourceSettings:
        return SourceSettings(**{f.name: getattr(self, f.name) for f in fields(SourceSettings)})

    def worker_count(self) -> int:
        return self.settings().worker_count()

    def open(self, storage: Storage, snapshot: str) -> tuple[ImageSource, dict]:
        """The source, and a JSON description of it for metadata and the data card."""
        return self.settings().open(storage, snapshot)


# ---- the per-shard asset ---------------------------------------------------------------------------------
class WebdatasetShardsConfig(dg.Config):
    samples_per_shard: int = Field(
        default=ShardSettings.samples_per_shard,
        description="samples per tar (img2dataset's default); an image's captions never straddle two tars",
    )
    image_size: int = Field(
        default=ShardSettings.image_size, description="side of the square written (OpenAI CLIP / MetaCLIP: 224)"
    )
    resize_mode: str = Field(
        default=ShardSettings.resize_mode, description="img2dataset's modes: center_crop, border, keep_ratio, no"
    )
    jpeg_quality: int = ShardSettings.jpeg_quality
    max_pixels: int = Field(
        default=ShardSettings.max_pixels, description="larger declared images are refused unread (decompression bombs)"
    )
    min_image_size: int = Field(
        default=ShardSettings.min_image_size, description="smallest original side accepted; 0 accepts all"
    )
    blur_faces: bool = Field(
        default=ShardSettings.blur_faces,
        description="pixelate faces (OpenCV Haar cascade) before writing; default METACLIP_BLUR_FACES (k8s: on)",
    )
    retry_failed: bool = Field(
        default=ShardSettings.retry_failed, description="re-fetch failed rows of complete tars (else skipped)"
    )


@dg.asset(
    group_name="acquisition",
    partitions_def=snapshot_shard_partitions,
    deps=[dg.AssetDep(balanced_subset, partition_mapping=all_shards_of_snapshot)],
    kinds={"webdataset", "parquet"},
    description="This shard's curated pairs as webdataset tar shards (<key>.jpg/.txt/.json) for open_clip, "
    "with a parquet index and a failure table (one row per pair not written, with a reason code). Resumable.",
    check_specs=[
        check_spec(SHARDS_READABLE, "webdataset_shards", DESCRIPTIONS),
        check_spec(NOTHING_LOST, "webdataset_shards", DESCRIPTIONS),
    ],
)
def webdataset_shards(
    context: dg.AssetExecutionContext,
    config: WebdatasetShardsConfig,
    curation_storage: CurationStorage,
    image_source: ImageSourceResource,
) -> dg.MaterializeResult:
    snapshot, shard = snapshot_and_shard(context)
    r = acquire_shard(
        curation_storage.storage(),
        snapshot,
        shard,
        NUM_SHARDS,
        ShardSettings(**config.model_dump()),
        image_source.settings(),
        log=context.log.info,
        num_buckets=NUM_BUCKETS,
    )
    result, summary = r.result, r.summary
    return materialize_result(
        {
            "dagster/row_count": result.ok,
            "rows_in": result.rows,
            "images": result.images,
            "success_rate": dg.MetadataValue.float(summary["success_rate"]),
            "reasons": dg.MetadataValue.json(summary["reasons"]),
            "failed": summary["failed"],
            "transient_failures": result.transient_failures,
            "tars": len(result.shards),
            "shards_written": result.shards_written,
            "shards_skipped": result.shards_skipped,
            "tar_bytes": summary["tar_bytes"],
            "rows_per_s": dg.MetadataValue.float(summary["rows_per_s"] or 0.0),
            "path": dg.MetadataValue.path(str(r.out_dir)),
            "index": dg.MetadataValue.path(r.index_uri),  # where it lives (a URL under an object-store root)
            "failure_table": dg.MetadataValue.path(r.failures_uri),
            "source": dg.MetadataValue.json(r.source),
        },
        r.checks,
    )


# ---- the per-snapshot report -----------------------------------------------------------------------------
@dg.asset(
    group_name="acquisition",
    partitions_def=snapshot_partitions,
    deps=[dg.AssetDep(webdataset_shards, partition_mapping=all_shards_of_snapshot)],
    kinds={"json", "markdown"},
    description="Image acquisition over all shards of the snapshot: success rate, failure reasons, per-shard "
    "table; written next to the data card (acquisition.json, acquisition.md).",
    check_specs=[check_spec(ACCOUNTS_FOR_CURATED_SUBSET, "acquisition_report", DESCRIPTIONS, blocking=False)],
)
def acquisition_report(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    snapshot = context.partition_key
    r = write_report(curation_storage.storage(), snapshot, NUM_SHARDS, NUM_BUCKETS)
    summary = r.summary
    context.log.info(
        f"acquisition {snapshot}: {summary['ok']:,}/{summary['rows']:,} ok "
        f"({summary['success_rate']:.1%}), reasons {summary['reasons']}"
    )
    return materialize_result(
        {
            "acquisition": dg.MetadataValue.md(r.markdown),
            "success_rate": dg.MetadataValue.float(summary["success_rate"]),
            "samples": summary["ok"],
            "pairs": summary["rows"],
            "reasons": dg.MetadataValue.json(summary["reasons"]),
            "tars": summary["tars"],
            "cross_shard_duplicate_images": summary["cross_shard_duplicate_images"],
            "acquisition_json": dg.MetadataValue.path(r.json_uri),
            "acquisition_md": dg.MetadataValue.path(r.md_uri),
            "shards_dir": dg.MetadataValue.path(str(r.shards_dir)),
        },
        [r.check],
    )
