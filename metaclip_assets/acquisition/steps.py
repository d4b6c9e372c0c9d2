"""The `webdataset_shards` asset's work on storage: pick this shard's curated rows, open the image source,
`acquire` them into `<data_root>/shards/<snapshot>/`, write the shard's stats and compute its checks.

Curated rows go to acquisition shards by image (`shard_of(image_uuid)`), not by crawl file: one image URL is
linked from pages in many crawl files, and splitting by crawl file would fetch it once per shard, store its
bytes in several tars and give its samples the same key in each. By image, a URL is fetched once per snapshot,
the in-shard dedup sees all of its captions, and sample keys are unique over the snapshot.

Knows storage and layout, never Dagster. The settings dataclasses hold the defaults the Dagster configs show.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from metaclip_assets import layout
from metaclip_assets import settings as settings_module
from metaclip_assets.acquisition import checks, resources
from metaclip_assets.acquisition.fetch_http import HttpImageSource
from metaclip_assets.acquisition.mirror import ShardMirror
from metaclip_assets.acquisition.pipeline import AcquireResult, WorkerPlan, acquire, plan_workers
from metaclip_assets.acquisition.process import ProcessConfig
from metaclip_assets.acquisition.source import ImageSource
from metaclip_assets.acquisition.warc_replay import WarcReplaySource
from metaclip_assets.checks import CheckResult
from metaclip_assets.curation.steps import read_curated
from metaclip_assets.progress import PROGRESS_EVERY_S, Every
from metaclip_assets.sharding import shard_of
from metaclip_assets.storage import Storage

Log = Callable[[str], None]
_PROCESS = ProcessConfig()  # slots: its defaults are read off an instance
_HTTP = inspect.signature(HttpImageSource.__init__).parameters  # its keyword defaults are the source's defaults


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ShardSettings:
    """How the images of a shard are written (field order is the order stored in the stats and report)."""

    samples_per_shard: int = 10_000  # img2dataset's default; an image's captions never straddle two tars
    image_size: int = 224  # OpenAI CLIP / MetaCLIP: 224
    resize_mode: str = _PROCESS.resize_mode
    jpeg_quality: int = _PROCESS.jpeg_quality
    max_pixels: int = _PROCESS.max_pixels
    min_image_size: int = _PROCESS.min_image_size
    blur_faces: bool = settings_module.blur_faces()  # faces.py: Haar detection + pixelation before encoding
    retry_failed: bool = False  # re-fetch failed rows of complete tars (else skipped)


@dataclass
class SourceSettings:
    """Where image bytes come from: `warc` replays WARC files (offline), `http` fetches from the web."""

    kind: str = "warc"
    warc_globs: list[str] = field(default_factory=lambda: [layout.IMAGE_WARC_GLOB])
    workers: int | None = None  # fetch threads; default: usable CPUs (warc) or 32 (http); decodes: see plan
    max_bytes: int = _HTTP["max_bytes"].default
    timeout_s: float = _HTTP["timeout"].default
    max_retries: int = _HTTP["max_retries"].default
    backoff_s: float = _HTTP["backoff"].default
    max_backoff_s: float = _HTTP["max_backoff"].default
    max_redirects: int = _HTTP["max_redirects"].default
    max_connections: int = _HTTP["max_connections"].default
    max_per_host: int = _HTTP["max_per_host"].default
    min_host_interval_s: float = _HTTP["min_host_interval"].default
    max_wait_s: float = _HTTP["max_wait"].default
    respect_robots: bool = _HTTP["respect_robots"].default
    contact_url: str = _HTTP["contact_url"].default
    user_agent: str | None = _HTTP["user_agent"].default  # None: built from contact_url

    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        # CPUs the process may use (affinity, cgroup quota), not the node's: a 2-CPU pod on a 64-core node gets 2
        return 32 if self.kind == "http" else max(2, resources.detect().cpus)

    def plan(self, settings: ShardSettings, capacity: resources.Capacity | None = None) -> WorkerPlan:
        """Fetch threads and decode slots for `settings`' worst-case decode within the memory budget."""
        cfg = ProcessConfig(**{f.name: getattr(settings, f.name) for f in fields(ProcessConfig)})
        return plan_workers(
            cfg,
            capacity or resources.detect(),
            workers=self.worker_count(),
            body_bytes=self.max_bytes,
            memory_fraction=settings_module.decode_memory_fraction(),
        )

    def warc_files(self, storage: Storage, snapshot: str) -> list[str]:
        """Local paths and object URLs of the image WARCs; a glob is absolute, a URL, or under the data root."""
        found: set[str] = set()
        for pattern in self.warc_globs:
            pattern = pattern.replace("{snapshot}", snapshot)
            if os.path.isabs(pattern) or (storage.is_local and "://" not in pattern):
                found.update(glob.glob(pattern if os.path.isabs(pattern) else str(storage.local_path(pattern))))
                continue
            fs, path = fsspec.core.url_to_fs(pattern) if "://" in pattern else (storage.fs, storage.path(pattern))
            found.update(fs.unstrip_protocol(p) for p in fs.glob(path))
        return sorted(found)

    def open(self, storage: Storage, snapshot: str, scratch: Path | None = None) -> tuple[ImageSource, dict]:
        """The source, and a JSON description of it for metadata and the data card. WARCs in an object store are
        read from local copies in `scratch` (default: a cache under TMPDIR that later shards on the machine reuse)."""
        if self.kind == "http":
            source = HttpImageSource(
                timeout=self.timeout_s,
                max_bytes=self.max_bytes,
                max_retries=self.max_retries,
                backoff=self.backoff_s,
                max_backoff=self.max_backoff_s,
                max_redirects=self.max_redirects,
                max_connections=self.max_connections,
                max_per_host=self.max_per_host,
                min_host_interval=self.min_host_interval_s,
                max_wait=self.max_wait_s,
                respect_robots=self.respect_robots,
                contact_url=self.contact_url,
                user_agent=self.user_agent,
            )
            return source, {
                "kind": "http",
                "user_agent": source.user_agent,
                "timeout_s": self.timeout_s,
                "max_retries": self.max_retries,
                "max_per_host": self.max_per_host,
                "min_host_interval_s": self.min_host_interval_s,
                "max_wait_s": self.max_wait_s,
                "respect_robots": self.respect_robots,
            }
        if self.kind == "warc":
            files = self.warc_files(storage, snapshot)
            if not files:
                raise FileNotFoundError(
                    f"no WARC files for {snapshot} matching {self.warc_globs} under {storage.uri('')}: put the image "
                    "WARCs there, set image_source.warc_globs, or use image_source.kind 'http'"
                )
            source = replay_source(storage, snapshot, files, self.max_bytes, self.max_redirects, scratch)
            return source, {"kind": "warc", "warc_files": files, "urls_indexed": len(source)}
        raise ValueError(f"image_source.kind must be 'warc' or 'http', got {self.kind!r}")


SOURCE_DEFAULTS = SourceSettings()


def _file_stamp(name: str) -> list:
    """[name, bytes, version] of a local path (mtime in ns) or an object URL (ETag, else its modification time)."""
    fs, path = fsspec.core.url_to_fs(name)
    if isinstance(fs, LocalFileSystem):
        st = os.stat(path)
        return [name, st.st_size, st.st_mtime_ns]
    info = fs.info(path)
    version = next((info[k] for k in ("ETag", "etag", "LastModified", "updated", "mtime") if k in info), "")
    return [name, int(info["size"]), str(version)]


def local_copies(stamps: list[list], scratch: Path | None = None) -> dict[str, str]:
    """{name: local path} for WARCs given by `_file_stamp`: local files as they are, objects downloaded once into
    `scratch` under a name that holds their version (a changed object is fetched again, never read stale)."""
    out: dict[str, str] = {}
    for stamp in stamps:
        fs, path = fsspec.core.url_to_fs(stamp[0])
        if isinstance(fs, LocalFileSystem):
            out[stamp[0]] = path
            continue
        folder = scratch or Path(tempfile.gettempdir()) / "metaclip-warcs"
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
        local = folder / f"{digest}-{path.rsplit('/', 1)[-1]}"
        if not local.exists():
            tmp = folder / f".{local.name}.{os.getpid()}.download"
            fs.get_file(path, str(tmp))
            os.replace(tmp, local)  # a killed download never passes for a copy
        out[stamp[0]] = str(local)
    return out


def replay_source(
    storage: Storage,
    snapshot: str,
    files: list[str],
    max_bytes: int,
    max_redirects: int,
    scratch: Path | None = None,
) -> WarcReplaySource:
    """Replay source over `files` (paths or object URLs); the URL index is scanned once and cached, keyed by the
    files' names, sizes and versions, so the other shards of the snapshot (and re-runs) do not read every archive
    again. The cached index names each file as given; its records are read from `local_copies`."""
    stamp_src = [_file_stamp(str(p)) for p in files]
    stamp = hashlib.sha256(json.dumps(stamp_src).encode()).hexdigest()[:16]
    key = layout.warc_index_key(snapshot, stamp)
    local = local_copies(stamp_src, scratch)
    if storage.exists(key):
        index = storage.read_parquet(key).with_columns(pl.col("path").replace(local))
        return WarcReplaySource.from_index(index, max_bytes=max_bytes, max_redirects=max_redirects)
    source = WarcReplaySource.from_files(list(local.values()), max_bytes=max_bytes, max_redirects=max_redirects)
    names = {path: name for name, path in local.items()}
    storage.write_parquet(key, source.index_frame().with_columns(pl.col("path").replace(names)))
    return source


def rows_for_shard(curated: pl.DataFrame, shard: int, num_shards: int) -> pl.DataFrame:
    """The curated rows whose image belongs to `shard` (see the module docstring for why by image)."""
    uuids = curated["image_uuid"].unique().to_list()
    return curated.filter(pl.col("image_uuid").is_in([u for u in uuids if shard_of(u, num_shards) == shard]))


def progress_logger(log: Log, label: str, total: int) -> Callable[[dict, float], None]:
    """`acquire`'s progress callback: one log line after each tar, and every few seconds while fetching."""
    every = Every(at_once=True)

    def report(counts, rate: float) -> None:
        done = sum(counts.values())
        if not every.due(force=done >= total):
            return
        failed = {k: v for k, v in sorted(counts.items()) if k != "ok"}
        log(
            f"{label}: {done:,}/{total:,} rows ({100 * done / max(total, 1):.0f}%), "
            f"ok {counts.get('ok', 0):,}, failed {failed}, {rate:.1f} rows/s"
        )

    return report


@dataclass
class ShardAcquisition:
    result: AcquireResult
    summary: dict  # what the shard's stats.json holds
    source: dict  # the image source, described
    out_dir: str  # the shards folder as a path or URL (storage.uri)
    checks: list[CheckResult]
    index_uri: str = ""  # where the index and failure table are (result's paths are the local build folder's)
    failures_uri: str = ""


def acquire_shard(
    storage: Storage,
    snapshot: str,
    shard: int,
    num_shards: int,
    settings: ShardSettings,
    source_settings: SourceSettings,
    log: Log = _quiet,
    num_buckets: int | None = None,
) -> ShardAcquisition:
    buckets = num_buckets or settings_module.num_buckets()
    # bucket by bucket: memory holds one bucket of the balanced subset and this shard's rows, not the snapshot
    rows = pl.concat(
        [rows_for_shard(b, shard, num_shards) for b in read_curated(storage, snapshot, num_shards, buckets)]
    )
    # tar writing and renames need a local folder: on a URL root the shard is built in one and uploaded (mirror.py)
    with ShardMirror.open(storage, snapshot, shard) as mirror:
        return _acquire_into(mirror, rows, snapshot, shard, num_shards, settings, source_settings, log)


def _acquire_into(
    mirror: ShardMirror,
    rows: pl.DataFrame,
    snapshot: str,
    shard: int,
    num_shards: int,
    settings: ShardSettings,
    source_settings: SourceSettings,
    log: Log,
) -> ShardAcquisition:
    storage, out_dir = mirror.storage, mirror.dir
    source, described = source_settings.open(storage, snapshot)
    label = f"{snapshot} shard {shard:03d}/{num_shards}"
    plan = source_settings.plan(settings)
    log(f"{label}: {len(rows):,} curated rows, {rows['url'].n_unique():,} images, source {described}")
    log(f"{label}: {plan.line()}")
    result = acquire(
        rows,
        source,
        out_dir,
        snapshot=snapshot,
        shard=shard,
        **asdict(settings),
        plan=plan,
        progress=mirror.pushing(progress_logger(log, label, len(rows))),
        progress_every_s=PROGRESS_EVERY_S,
    )
    mirror.push()  # the index and failure table, written after the last chunk
    mirror.verify()
    shards_uri = storage.uri(layout.shards_dir(snapshot))
    summary = {
        **result.as_metadata(),
        "snapshot": snapshot,
        "shard": shard,
        "num_shards": num_shards,
        "source": described,
        "config": asdict(settings),
        "out_dir": shards_uri,
        "tars": [p.name for p in result.shards],
        "tar_bytes": sum(p.stat().st_size for p in result.shards if p.exists()),
        "index": result.index_path.name,
        "failures": result.failures_path.name,
    }
    storage.write_json(layout.acquisition_stats_key(snapshot, shard, num_shards), summary, indent=2)
    log(
        f"{label}: {summary['ok']:,}/{summary['rows']:,} ok ({summary['success_rate']:.1%}), "
        f"reasons {summary['reasons']}, {len(result.shards)} tars "
        f"({result.shards_written} written, {result.shards_skipped} skipped)"
    )
    return ShardAcquisition(
        result,
        summary,
        described,
        shards_uri,
        # the tars are read from the local folder, which verify() found byte-for-byte (in size) in the store
        [checks.shards_readable(mirror.view, snapshot, shard), checks.nothing_lost(storage, rows, snapshot, shard)],
        index_uri=storage.uri(layout.acquisition_index_key(snapshot, shard)),
        failures_uri=storage.uri(layout.acquisition_failures_key(snapshot, shard)),
    )
