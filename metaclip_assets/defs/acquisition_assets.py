"""Image acquisition as Dagster assets: a snapshot's balanced subset -> webdataset tar shards, and a report.

Thin wiring around the plain-Python `metaclip_assets.acquisition` (fetch, decode, shard, resume):
- `webdataset_shards` (snapshot x shard) runs `acquire` on this shard's curated rows into
  `<data_root>/shards/<snapshot>/` (`<snapshot>-<shard>-<n>.tar`, `<snapshot>-<shard>.index.parquet`,
  `.failures.parquet`), the folder the training asset globs. A re-run skips complete tars.
- `acquisition_report` (snapshot) aggregates every shard into the data card folder and the UI.

Curated rows go to acquisition shards by image (`shard_of(image_uuid)`), not by crawl file: one image URL is
linked from pages in many crawl files, and splitting by crawl file would fetch it once per shard, store its
bytes in several tars and give its samples the same key in each. By image, a URL is fetched once per snapshot,
the in-shard dedup sees all of its captions, and sample keys are unique over the snapshot.
"""

# No `from __future__ import annotations`: dagster 1.13.27 cannot resolve a string annotation on `config`.
import glob
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import dagster as dg
import orjson
import polars as pl
from PIL import Image
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.acquisition import (
    DEFAULT_USER_AGENT,
    REASONS,
    TRANSIENT,
    HttpImageSource,
    ImageSource,
    WarcReplaySource,
    acquire,
    shard_prefix,
)
from metaclip_assets.acquisition.process import DEFAULT_MAX_PIXELS
from metaclip_assets.acquisition.shards import shard_files
from metaclip_assets.defs.partitions import (
    NUM_SHARDS,
    all_shards_of_snapshot,
    snapshot_and_shard,
    snapshot_partitions,
    snapshot_shard_partitions,
)
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.snapshot_assets import balanced_subset
from metaclip_assets.sharding import shard_of
from metaclip_assets.storage import Storage

PROGRESS_EVERY_S = 5.0
SAMPLE_MEMBERS = ("jpg", "txt", "json")


# ---- storage keys (relative to the data root) -------------------------------------------------------------
def shards_dir_key(snapshot: str) -> str:
    return f"shards/{snapshot}"  # training reads <shard_root>/<snapshot>/*.tar


def acquisition_stats_key(snapshot: str, shard: int) -> str:
    return layout.shard_key("acquisition", snapshot, shard, NUM_SHARDS, "stats.json")


def warc_index_key(snapshot: str, stamp: str) -> str:
    return f"acquisition/{snapshot}/warc-index-{stamp}.parquet"


def index_path(out_dir: Path, snapshot: str, shard: int) -> Path:
    return out_dir / f"{shard_prefix(snapshot, shard)}.index.parquet"


def failures_path(out_dir: Path, snapshot: str, shard: int) -> Path:
    return out_dir / f"{shard_prefix(snapshot, shard)}.failures.parquet"


def rows_for_shard(curated: pl.DataFrame, shard: int, num_shards: int) -> pl.DataFrame:
    """The curated rows whose image belongs to `shard` (see the module docstring for why by image)."""
    uuids = curated["image_uuid"].unique().to_list()
    return curated.filter(pl.col("image_uuid").is_in([u for u in uuids if shard_of(u, num_shards) == shard]))


# ---- where image bytes come from ----------------------------------------------------------------------------
class ImageSourceResource(dg.ConfigurableResource):
    """`kind: warc` replays image responses from WARC files (offline, archived crawls); `kind: http` fetches
    from the web with the SSRF-safe, polite fetcher. Switching is a config change."""

    kind: str = Field(default="warc", description="'warc' (replay from WARC files) or 'http' (fetch from the web)")
    warc_globs: list[str] = Field(
        default=["images/{snapshot}/*.warc.gz"],
        description="warc: WARC files holding the image responses; relative to the data root or absolute; "
        "{snapshot} is replaced by the partition's snapshot.",
    )
    workers: int | None = Field(
        default=None,
        description="concurrent fetch+decode threads; default: CPU count (warc) or 32 (http, network bound)",
    )
    max_bytes: int = Field(default=16 * 1024 * 1024, description="largest image body accepted")
    timeout_s: float = Field(default=10.0, description="http: total deadline per request (DNS+connect+read)")
    max_retries: int = Field(default=2, description="http: retries of transient errors (timeouts, 5xx, 429)")
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_redirects: int = 5
    max_connections: int = Field(default=64, description="http: open connections overall")
    max_per_host: int = Field(default=4, description="http: open connections per host (politeness)")
    user_agent: str = DEFAULT_USER_AGENT

    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        return 32 if self.kind == "http" else max(2, os.cpu_count() or 2)

    def warc_files(self, storage: Storage, snapshot: str) -> list[Path]:
        found: set[str] = set()
        for pattern in self.warc_globs:
            pattern = pattern.replace("{snapshot}", snapshot)
            found.update(glob.glob(pattern if os.path.isabs(pattern) else str(storage.local_path(pattern))))
        return [Path(p) for p in sorted(found)]

    def open(self, storage: Storage, snapshot: str) -> tuple[ImageSource, dict]:
        """The source, and a JSON description of it for metadata and the data card."""
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
                user_agent=self.user_agent,
            )
            return source, {
                "kind": "http",
                "user_agent": self.user_agent,
                "timeout_s": self.timeout_s,
                "max_retries": self.max_retries,
                "max_per_host": self.max_per_host,
            }
        if self.kind == "warc":
            files = self.warc_files(storage, snapshot)
            if not files:
                raise FileNotFoundError(
                    f"no WARC files for {snapshot} matching {self.warc_globs} under {storage.uri('')}: put the image "
                    "WARCs there, set image_source.warc_globs, or use image_source.kind 'http'"
                )
            source = _replay_source(storage, snapshot, files, self.max_bytes, self.max_redirects)
            return source, {"kind": "warc", "warc_files": [str(p) for p in files], "urls_indexed": len(source)}
        raise ValueError(f"image_source.kind must be 'warc' or 'http', got {self.kind!r}")


def _replay_source(
    storage: Storage, snapshot: str, files: list[Path], max_bytes: int, max_redirects: int
) -> WarcReplaySource:
    """Replay source over `files`; the URL index is scanned once and cached, keyed by the files' names, sizes
    and mtimes, so the other shards of the snapshot (and re-runs) do not read every archive again."""
    stamp_src = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    stamp = hashlib.sha256(json.dumps(stamp_src).encode()).hexdigest()[:16]
    key = warc_index_key(snapshot, stamp)
    if storage.exists(key):
        return WarcReplaySource.from_index(storage.read_parquet(key), max_bytes=max_bytes, max_redirects=max_redirects)
    source = WarcReplaySource.from_files(files, max_bytes=max_bytes, max_redirects=max_redirects)
    storage.write_parquet(key, source.index_frame())
    return source


# ---- checks (plain functions over the files on disk, so tests can also run them on damaged folders) -------
def _read_samples(tars: list[Path]) -> tuple[list[dict], str]:
    """Every sample of `tars` as the webdataset package groups them (falls back to the same grouping rule
    with tarfile, key = name up to the first dot, when webdataset is not installed)."""
    if not tars:
        return [], "none"
    try:
        import webdataset as wds
    except ImportError:
        samples: list[dict] = []
        for tar in tars:
            with tarfile.open(tar) as tf:
                for m in tf.getmembers():
                    key, _, ext = m.name.partition(".")
                    if not samples or samples[-1]["__key__"] != key or samples[-1]["__url__"] != str(tar):
                        samples.append({"__key__": key, "__url__": str(tar)})
                    samples[-1][ext] = tf.extractfile(m).read()  # type: ignore[union-attr]
        return samples, "tarfile"
    dataset = wds.WebDataset([str(t) for t in tars], shardshuffle=False, handler=wds.reraise_exception)
    return [s for s in dataset if s.get("__key__")], f"webdataset {wds.__version__}"


def check_shards_readable(out_dir: Path, snapshot: str, shard: int) -> dg.AssetCheckResult:
    """The tars on disk, read with webdataset, hold exactly the index's samples, each complete and sound."""
    index = pl.read_parquet(index_path(out_dir, snapshot, shard), columns=["key", "tar", "width", "height"])
    listed = sorted(set(index["tar"].to_list()))
    on_disk = shard_files(out_dir, shard_prefix(snapshot, shard), ".tar")
    missing_tars = [t for t in listed if not (out_dir / t).exists()]
    unlisted_tars = [p.name for p in on_disk if p.name not in listed]
    try:
        samples, reader = _read_samples(on_disk)
        error = None
    except Exception as e:  # noqa: BLE001 - an unreadable tar is exactly what this check reports
        samples, reader, error = [], "failed", f"{type(e).__name__}: {e}"[:500]
    sizes = {k: (w, h) for k, w, h in index.select("key", "width", "height").iter_rows()}
    incomplete, wrong = [], []
    for s in samples:
        if not all(m in s for m in SAMPLE_MEMBERS):
            incomplete.append(s["__key__"])
            continue
        meta = orjson.loads(s["json"])
        # Image.open reads the header only: cheap enough for every sample
        if meta.get("key") != s["__key__"] or Image.open(io.BytesIO(s["jpg"])).size != sizes.get(s["__key__"]):
            wrong.append(s["__key__"])
    keys = [s["__key__"] for s in samples]
    same_keys = sorted(keys) == sorted(index["key"].to_list())
    return dg.AssetCheckResult(
        check_name="shards_readable",
        passed=bool(
            error is None
            and not missing_tars
            and not unlisted_tars
            and same_keys
            and len(keys) == len(set(keys))
            and not incomplete
            and not wrong
        ),
        metadata={
            "tars": len(on_disk),
            "samples_read": len(samples),
            "index_rows": len(index),
            "reader": reader,
            "keys_match_index": same_keys,
            "missing_tars": dg.MetadataValue.json(missing_tars),
            "unlisted_tars": dg.MetadataValue.json(unlisted_tars),
            "incomplete_samples": len(incomplete),
            "wrong_key_or_size": len(wrong),
            "error": error or "",
        },
    )


def check_nothing_lost(rows: pl.DataFrame, out_dir: Path, snapshot: str, shard: int) -> dg.AssetCheckResult:
    """Index rows + failure rows are this shard's curated rows, each pair exactly once, with valid reasons."""
    cols = ["pair_id", "reason_code"]
    index = pl.read_parquet(index_path(out_dir, snapshot, shard), columns=cols)
    failures = pl.read_parquet(failures_path(out_dir, snapshot, shard), columns=cols)
    got = pl.concat([index, failures])["pair_id"]
    want = set(rows["pair_id"].to_list())
    lost, invented = len(want - set(got.to_list())), len(set(got.to_list()) - want)
    bad_codes = sorted(
        {*failures["reason_code"].to_list()} - (REASONS.keys() - {"ok"}) | {*index["reason_code"].to_list()} - {"ok"}
    )
    return dg.AssetCheckResult(
        check_name="nothing_lost",
        passed=len(got) == len(rows) and not lost and not invented and got.n_unique() == len(got) and not bad_codes,
        metadata={
            "input_rows": len(rows),
            "index_rows": len(index),
            "failure_rows": len(failures),
            "lost": lost,
            "invented": invented,
            "repeated": len(got) - got.n_unique(),
            "unknown_reason_codes": dg.MetadataValue.json(bad_codes),
        },
    )


# ---- the per-shard asset ---------------------------------------------------------------------------------
class WebdatasetShardsConfig(dg.Config):
    samples_per_shard: int = Field(
        default=10_000,
        description="samples per tar (img2dataset's default); an image's captions never straddle two tars",
    )
    image_size: int = Field(default=224, description="side of the square written (OpenAI CLIP / MetaCLIP: 224)")
    resize_mode: str = Field(
        default="center_crop", description="img2dataset's modes: center_crop, border, keep_ratio, no"
    )
    jpeg_quality: int = 95
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, description="larger declared images are refused unread (decompression bombs)"
    )
    min_image_size: int = Field(default=0, description="smallest original side accepted; 0 accepts all")
    retry_failed: bool = Field(default=False, description="re-fetch failed rows of complete tars (else skipped)")


def _progress_logger(context: dg.AssetExecutionContext, label: str, total: int):
    last = [float("-inf")]

    def report(counts, rate: float) -> None:  # from acquire: after each tar, and every few s while fetching
        done = sum(counts.values())
        if done < total and time.monotonic() - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = time.monotonic()
        failed = {k: v for k, v in sorted(counts.items()) if k != "ok"}
        context.log.info(
            f"{label}: {done:,}/{total:,} rows ({100 * done / max(total, 1):.0f}%), "
            f"ok {counts.get('ok', 0):,}, failed {failed}, {rate:.1f} rows/s"
        )

    return report


@dg.asset(
    group_name="acquisition",
    partitions_def=snapshot_shard_partitions,
    deps=[dg.AssetDep(balanced_subset, partition_mapping=all_shards_of_snapshot)],
    kinds={"webdataset", "parquet"},
    description="This shard's curated pairs as webdataset tar shards (<key>.jpg/.txt/.json) for open_clip, "
    "with a parquet index and a failure table (one row per pair not written, with a reason code). Resumable.",
    check_specs=[
        dg.AssetCheckSpec(
            "shards_readable",
            asset="webdataset_shards",
            blocking=True,
            description="webdataset reads back exactly the index's samples, each with jpg, txt, json",
        ),
        dg.AssetCheckSpec(
            "nothing_lost",
            asset="webdataset_shards",
            blocking=True,
            description="index rows + failure rows == this shard's curated rows, each pair once",
        ),
    ],
)
def webdataset_shards(
    context: dg.AssetExecutionContext,
    config: WebdatasetShardsConfig,
    curation_storage: CurationStorage,
    image_source: ImageSourceResource,
) -> dg.MaterializeResult:
    snapshot, shard = snapshot_and_shard(context)
    storage = curation_storage.storage()
    if not storage.exists(layout.balanced_key(snapshot)):
        raise FileNotFoundError(
            f"{storage.uri(layout.balanced_key(snapshot))} is missing: materialize balanced_subset for {snapshot} first"
        )
    rows = rows_for_shard(storage.read_parquet(layout.balanced_key(snapshot)), shard, NUM_SHARDS)
    out_dir = storage.local_path(shards_dir_key(snapshot))  # tar writing and renames need a local filesystem
    source, described = image_source.open(storage, snapshot)
    label = f"{snapshot} shard {shard:03d}/{NUM_SHARDS}"
    context.log.info(f"{label}: {len(rows):,} curated rows, {rows['url'].n_unique():,} images, source {described}")
    result = acquire(
        rows,
        source,
        out_dir,
        snapshot=snapshot,
        shard=shard,
        samples_per_shard=config.samples_per_shard,
        image_size=config.image_size,
        resize_mode=config.resize_mode,
        jpeg_quality=config.jpeg_quality,
        max_pixels=config.max_pixels,
        min_image_size=config.min_image_size,
        retry_failed=config.retry_failed,
        workers=image_source.worker_count(),
        progress=_progress_logger(context, label, len(rows)),
        progress_every_s=PROGRESS_EVERY_S,
    )
    summary = {
        **result.as_metadata(),
        "snapshot": snapshot,
        "shard": shard,
        "num_shards": NUM_SHARDS,
        "source": described,
        "config": config.model_dump(),
        "out_dir": str(out_dir),
        "tars": [p.name for p in result.shards],
        "tar_bytes": sum(p.stat().st_size for p in result.shards if p.exists()),
        "index": result.index_path.name,
        "failures": result.failures_path.name,
    }
    storage.write_json(acquisition_stats_key(snapshot, shard), summary, indent=2)
    context.log.info(
        f"{label}: {summary['ok']:,}/{summary['rows']:,} ok ({summary['success_rate']:.1%}), "
        f"reasons {summary['reasons']}, {len(result.shards)} tars "
        f"({result.shards_written} written, {result.shards_skipped} skipped)"
    )
    return dg.MaterializeResult(
        metadata={
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
            "path": dg.MetadataValue.path(str(out_dir)),
            "index": dg.MetadataValue.path(str(result.index_path)),
            "failure_table": dg.MetadataValue.path(str(result.failures_path)),
            "source": dg.MetadataValue.json(described),
        },
        check_results=[
            check_shards_readable(out_dir, snapshot, shard),
            check_nothing_lost(rows, out_dir, snapshot, shard),
        ],
    )


# ---- the per-snapshot report -----------------------------------------------------------------------------
def summarize(snapshot: str, stats: list[dict], index: pl.DataFrame, failures: pl.DataFrame) -> dict:
    rows = len(index) + len(failures)
    reasons = dict(
        sorted(
            pl.concat([index.select("reason_code"), failures.select("reason_code")])["reason_code"]
            .value_counts()
            .iter_rows(),
            key=lambda kv: (-kv[1], kv[0]),
        )
    )
    # Dedup is exact within a shard; the same bytes under two URLs in two shards is only counted here.
    per_sha = index.group_by("sha256").agg(pl.col("image_uuid").n_unique().alias("n"))
    redundant = int((per_sha["n"] - 1).sum() or 0)
    examples = {
        r: [
            {"url": u, "detail": d}
            for u, d in g.unique("url", maintain_order=True).select("url", "detail").head(3).iter_rows()
        ]
        for (r,), g in failures.sort("key").group_by("reason_code", maintain_order=True)
    }
    return {
        "snapshot": snapshot,
        "rows": rows,
        "ok": len(index),
        "failed": len(failures),
        "success_rate": round(len(index) / rows, 4) if rows else 0.0,
        "images": pl.concat([index["url"], failures["url"]]).n_unique(),
        "images_ok": index["url"].n_unique(),
        "reasons": reasons,
        "reason_meanings": {r: REASONS[r] for r in reasons if r in REASONS},
        "transient_failures": sum(n for r, n in reasons.items() if r in TRANSIENT),
        "cross_shard_duplicate_images": redundant,
        "tars": sum(len(s["tars"]) for s in stats),
        "tar_bytes": sum(s["tar_bytes"] for s in stats),
        "source": stats[0]["source"] if stats else {},
        # one processing config for the snapshot, or every shard's when they were made with different ones
        "config": stats[0]["config"]
        if len({json.dumps(s["config"], sort_keys=True) for s in stats}) == 1
        else {"mixed": [s["config"] for s in stats]},
        "per_shard": [
            {
                k: s[k]
                for k in (
                    "shard",
                    "rows",
                    "ok",
                    "success_rate",
                    "reasons",
                    "shards_written",
                    "shards_skipped",
                    "elapsed_s",
                    "rows_per_s",
                )
            }
            | {"tars": len(s["tars"])}
            for s in stats
        ],
        "failure_examples": examples,
    }


def report_markdown(s: dict) -> str:
    src = s["source"]
    where = (
        f"WARC replay of {len(src.get('warc_files', []))} file(s), {src.get('urls_indexed', 0):,} URLs indexed"
        if src.get("kind") == "warc"
        else f"HTTP fetch (User-Agent `{src.get('user_agent', '')}`)"
    )
    cfg = s["config"]
    images = (
        "settings differ between shards (see acquisition.json)"
        if "mixed" in cfg
        else f"{cfg.get('image_size')} px, {cfg.get('resize_mode')}, JPEG quality {cfg.get('jpeg_quality')}"
    )
    lines = [
        "## Image acquisition",
        "",
        f"Snapshot **{s['snapshot']}**: {s['rows']:,} curated pairs ({s['images']:,} distinct image URLs) -> "
        f"**{s['ok']:,} samples** in {s['tars']} webdataset tar shard(s), {s['tar_bytes'] / 1e6:.2f} MB. "
        f"Success rate **{s['success_rate']:.1%}**.",
        "",
        f"Source: {where}. Images: {images}. Failures a retry may fix: {s['transient_failures']:,}. Identical images "
        f"under different URLs in different shards: {s['cross_shard_duplicate_images']:,}.",
        "",
        "| reason | pairs | share | meaning |",
        "|---|---:|---:|---|",
        *[
            f"| `{r}` | {n:,} | {n / max(s['rows'], 1):.1%} | {s['reason_meanings'].get(r, '')} |"
            for r, n in s["reasons"].items()
        ],
        "",
        "### Per shard",
        "",
        "| shard | pairs | samples | success | tars | written | skipped |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {p['shard']:03d} | {p['rows']:,} | {p['ok']:,} | {p['success_rate']:.1%} | {p['tars']} | "
            f"{p['shards_written']} | {p['shards_skipped']} |"
            for p in s["per_shard"]
        ],
    ]
    if s["failure_examples"]:
        lines += ["", "### Failure examples", ""]
        lines += [
            f"- `{r}`: {e['url']} ({e['detail'] or 'no detail'})" for r, ex in s["failure_examples"].items() for e in ex
        ]
    return "\n".join(lines) + "\n"


@dg.asset(
    group_name="acquisition",
    partitions_def=snapshot_partitions,
    deps=[dg.AssetDep(webdataset_shards, partition_mapping=all_shards_of_snapshot)],
    kinds={"json", "markdown"},
    description="Image acquisition over all shards of the snapshot: success rate, failure reasons, per-shard "
    "table; written next to the data card (acquisition.json, acquisition.md).",
    check_specs=[
        dg.AssetCheckSpec(
            "accounts_for_curated_subset",
            asset="acquisition_report",
            description="Every pair of the current balanced subset is in exactly one shard's index or failure table, "
            "and every tar in the folder is listed in an index (no stale or foreign tars for training to pick up).",
        )
    ],
)
def acquisition_report(context: dg.AssetExecutionContext, curation_storage: CurationStorage) -> dg.MaterializeResult:
    snapshot = context.partition_key
    storage = curation_storage.storage()
    out_dir = storage.local_path(shards_dir_key(snapshot))
    missing = [
        s
        for s in range(NUM_SHARDS)
        if not storage.exists(acquisition_stats_key(snapshot, s))
        or not index_path(out_dir, snapshot, s).exists()
        or not failures_path(out_dir, snapshot, s).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"shards {missing} of {snapshot} have no acquisition results yet: materialize "
            f"webdataset_shards for every shard of {snapshot} first"
        )
    stats = [storage.read_json(acquisition_stats_key(snapshot, s)) for s in range(NUM_SHARDS)]
    index = pl.concat([pl.read_parquet(index_path(out_dir, snapshot, s)) for s in range(NUM_SHARDS)])
    failures = pl.concat([pl.read_parquet(failures_path(out_dir, snapshot, s)) for s in range(NUM_SHARDS)])
    summary = summarize(snapshot, stats, index, failures)
    folder = layout.datacard_dir(snapshot)
    json_uri = storage.write_json(f"{folder}/acquisition.json", summary, indent=2)
    md = report_markdown(summary)
    md_uri = storage.write_text(f"{folder}/acquisition.md", md)
    context.log.info(
        f"acquisition {snapshot}: {summary['ok']:,}/{summary['rows']:,} ok "
        f"({summary['success_rate']:.1%}), reasons {summary['reasons']}"
    )

    # Against the balanced subset as it is now: a re-balanced snapshot makes older shards stale.
    curated = storage.read_parquet(layout.balanced_key(snapshot), columns=["pair_id"])["pair_id"]
    accounted = pl.concat([index["pair_id"], failures["pair_id"]])
    tars_on_disk = sorted(p.name for p in out_dir.glob("*.tar"))
    stray = sorted(set(tars_on_disk) - set(index["tar"].to_list()))
    unaccounted = len(set(curated.to_list()) - set(accounted.to_list()))
    extra = len(set(accounted.to_list()) - set(curated.to_list()))
    check = dg.AssetCheckResult(
        check_name="accounts_for_curated_subset",
        passed=unaccounted == 0 and extra == 0 and accounted.n_unique() == len(accounted) and not stray,
        metadata={
            "curated": len(curated),
            "accounted": len(accounted),
            "unaccounted": unaccounted,
            "not_in_curated": extra,
            "repeated": len(accounted) - accounted.n_unique(),
            "stray_tars": dg.MetadataValue.json(stray),
        },
    )
    return dg.MaterializeResult(
        metadata={
            "acquisition": dg.MetadataValue.md(md),
            "success_rate": dg.MetadataValue.float(summary["success_rate"]),
            "samples": summary["ok"],
            "pairs": summary["rows"],
            "reasons": dg.MetadataValue.json(summary["reasons"]),
            "tars": summary["tars"],
            "cross_shard_duplicate_images": summary["cross_shard_duplicate_images"],
            "acquisition_json": dg.MetadataValue.path(json_uri),
            "acquisition_md": dg.MetadataValue.path(md_uri),
            "shards_dir": dg.MetadataValue.path(str(out_dir)),
        },
        check_results=[check],
    )
