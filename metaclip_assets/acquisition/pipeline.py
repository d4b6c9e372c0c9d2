"""Curated (image URL, text) rows -> webdataset shards + index + failure table, resumably.

Determinism comes from planning before fetching: rows are sorted by sample key and cut into chunks at image
boundaries (each image's texts stay in one chunk, so every URL is fetched once); chunk n always becomes shard
n, holding that chunk's successes in key order. A fetch failure therefore never shifts samples into other
shards, and a re-run, a resumed run and a fresh run produce the same files.

Per chunk the commit order is: (old sidecar removed) -> tar renamed into place -> sidecar
`<stem>.samples.parquet` renamed into place. The sidecar, listing every row of the chunk with its outcome,
is the completion marker: a chunk is complete when its sidecar exists, lists exactly the planned keys with
the same processing config, and the tar exists if any row succeeded. Everything else is redone.

Memory: fetch threads (`workers`) each hold at most one body, and only `decode_workers` of them decode at once,
each within `ProcessConfig.decode_bytes_bound()`; `plan_workers` picks decode_workers so that bodies plus decodes
fit a fraction of the memory the process actually has (cgroup limit, see `resources`).

Dedup: the first image (in key order) with a given sha256 of its original bytes is kept; later images with
the same bytes become `duplicate` rows pointing at it. On resume the hashes of every complete chunk are loaded
first, so a rebuilt chunk never re-admits bytes that another shard already holds.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from metaclip_assets.acquisition.faces import load_detector
from metaclip_assets.acquisition.process import (
    DECODE_BYTES_PER_PIXEL,
    DEFAULT_MAX_PIXELS,
    ImageRejected,
    ProcessConfig,
    ProcessedImage,
    process_image,
)
from metaclip_assets.acquisition.resources import Capacity, detect
from metaclip_assets.acquisition.shards import (
    ShardWriter,
    read_members,
    sample_key,
    shard_files,
    shard_prefix,
    shard_stem,
    stale_temps,
    write_parquet_atomic,
)
from metaclip_assets.acquisition.source import TRANSIENT, ImageSource
from metaclip_assets.crawl.pool import POOL_SCHEMA

# The balanced subset's rows: the pool's columns plus the matched entry ids.
INPUT_SCHEMA: dict[str, pl.DataType] = {**POOL_SCHEMA, "entry_ids": pl.List(pl.UInt32)}
REQUIRED = ("pair_id", "image_uuid", "url", "text")

# One row per input row, in the sidecars, the index (reason "ok") and the failure table (the rest).
SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "key": pl.Utf8,
    "shard_index": pl.Int32,
    "tar": pl.Utf8,
    "reason_code": pl.Utf8,
    "status": pl.Int32,
    "detail": pl.Utf8,
    "pair_id": pl.UInt64,
    "image_uuid": pl.Utf8,
    "url": pl.Utf8,
    "text": pl.Utf8,
    "text_key": pl.Utf8,
    "page_url": pl.Utf8,
    "snapshot": pl.Utf8,
    "source_file": pl.Utf8,
    "record_offset": pl.Int64,
    "fetch_time": pl.Utf8,
    "source_format": pl.Utf8,
    "entry_ids": pl.List(pl.UInt32),
    "sha256": pl.Utf8,
    "duplicate_of": pl.Utf8,
    "original_width": pl.Int32,
    "original_height": pl.Int32,
    "width": pl.Int32,
    "height": pl.Int32,
    "faces_blurred": pl.Int32,  # 0 with blurring off; null on rows without an image
    "attempts": pl.Int32,
    "fetch_seconds": pl.Float64,
    "config": pl.Utf8,
}
_JSON_FIELDS = (
    "key",
    "pair_id",
    "image_uuid",
    "url",
    "page_url",
    "snapshot",
    "source_file",
    "record_offset",
    "fetch_time",
    "text_key",
    "entry_ids",
    "original_width",
    "original_height",
    "width",
    "height",
    "sha256",
)

Progress = Callable[[Mapping[str, int], float], None]  # (rows by reason code so far, rows/s this run)
DEFAULT_MEMORY_FRACTION = 0.5  # of the process's memory for bodies + decodes; the rest: frames, tars, the runtime


@dataclass(frozen=True)
class WorkerPlan:
    """How many threads fetch and how many decode, and the memory arithmetic behind it (logged and reported)."""

    workers: int  # fetch threads; each holds at most one body of `body_bytes`
    decode_workers: int  # decodes at once, each within `decode_bytes`
    decode_bytes: int  # ProcessConfig.decode_bytes_bound(): worst case of one decode
    body_bytes: int  # the source's byte cap
    memory_budget: int  # memory_fraction x capacity.memory_bytes
    memory_fraction: float
    capacity: Capacity

    @property
    def worst_case_bytes(self) -> int:
        return self.workers * self.body_bytes + self.decode_workers * self.decode_bytes

    @property
    def fits(self) -> bool:
        return self.worst_case_bytes <= self.memory_budget

    def describe(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "decode_workers": self.decode_workers,
            "decode_bytes": self.decode_bytes,
            "body_bytes": self.body_bytes,
            "memory_budget": self.memory_budget,
            "memory_fraction": self.memory_fraction,
            "worst_case_bytes": self.worst_case_bytes,
            "fits": self.fits,
            **self.capacity.describe(),
        }

    def line(self) -> str:
        mib = 1 << 20
        text = (
            f"{self.workers} fetch / {self.decode_workers} decode workers: worst case {self.workers} x "
            f"{self.body_bytes // mib} MiB bodies + {self.decode_workers} x {self.decode_bytes // mib} MiB decodes "
            f"= {self.worst_case_bytes // mib} MiB of a {self.memory_budget // mib} MiB budget "
            f"({self.memory_fraction:.0%} of {self.capacity.memory_bytes // mib} MiB, {self.capacity.memory_source}; "
            f"{self.capacity.cpus} CPUs, {self.capacity.cpu_source})"
        )
        if not self.fits:
            text += (
                ". OVER BUDGET even with one decode: raise the memory limit, or lower max_pixels "
                f"({DECODE_BYTES_PER_PIXEL} bytes/pixel), workers or max_bytes"
            )
        return text


def plan_workers(
    cfg: ProcessConfig,
    capacity: Capacity,
    *,
    workers: int,
    body_bytes: int,
    memory_fraction: float = DEFAULT_MEMORY_FRACTION,
    decode_workers: int | None = None,
) -> WorkerPlan:
    """Decode slots: as many as fit the budget after the bodies, at most one per CPU and per fetch thread,
    at least one (`fits` turns False and the log says what to change when even one does not fit)."""
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    workers = max(1, workers)
    budget = int(capacity.memory_bytes * memory_fraction)
    per_decode = cfg.decode_bytes_bound()
    if decode_workers is None:
        decode_workers = (budget - workers * body_bytes) // per_decode
    decode_workers = max(1, min(decode_workers, workers, capacity.cpus))
    return WorkerPlan(workers, decode_workers, per_decode, body_bytes, budget, memory_fraction, capacity)


@dataclass
class AcquireResult:
    out_dir: Path
    shards: list[Path]  # complete tar files, in shard order
    index_path: Path  # parquet: rows that are in a shard (reason_code "ok"), with their tar
    failures_path: Path  # parquet: every other row, with reason_code / status / detail
    counts: dict[str, int]  # rows by reason code ("ok" included): sums to `rows`
    rows: int
    images: int  # distinct image URLs
    shards_written: int  # shards (re)built in this run: new ones, and complete ones revisited by retry_failed
    shards_skipped: int  # complete from an earlier run, not touched
    elapsed_s: float
    processed_rows: int = 0  # rows whose outcome was decided in this run
    transient_failures: int = 0  # failed rows a later retry_failed run might recover (source.TRANSIENT)
    plan: WorkerPlan | None = None  # the fetch / decode workers used, and why
    images_with_faces: int = 0  # distinct images kept with at least one face blurred (blur_faces on)
    faces_blurred: int = 0  # faces blurred in those images

    @property
    def ok(self) -> int:
        return self.counts.get("ok", 0)

    @property
    def success_rate(self) -> float:
        return self.ok / self.rows if self.rows else 0.0

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able summary for asset metadata and the data card."""
        return {
            "rows": self.rows,
            "images": self.images,
            "ok": self.ok,
            "failed": self.rows - self.ok,
            "success_rate": round(self.success_rate, 4),
            "reasons": dict(sorted(self.counts.items())),
            "shards": len(self.shards),
            "shards_written": self.shards_written,
            "shards_skipped": self.shards_skipped,
            "transient_failures": self.transient_failures,
            "processed_rows": self.processed_rows,
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_per_s": round(self.processed_rows / self.elapsed_s, 2) if self.elapsed_s > 0 else None,
            "workers": self.plan.describe() if self.plan else None,
            "images_with_faces": self.images_with_faces,
            "faces_blurred": self.faces_blurred,
        }


@dataclass(slots=True)
class _Outcome:
    reason: str
    status: int | None = None
    detail: str = ""
    attempts: int = 0
    seconds: float = 0.0
    image: ProcessedImage | None = None


@dataclass(slots=True)
class _Chunk:
    n: int
    stem: str
    rows: list[dict[str, Any]]  # key order

    @property
    def keys(self) -> list[str]:
        return [r["key"] for r in self.rows]


def _work(source: ImageSource, url: str, cfg: ProcessConfig, decode_slots: threading.Semaphore) -> _Outcome:
    """Fetch + decode one URL in a worker thread. Never raises: a bug becomes an `internal_error` row."""
    try:
        fr = source.fetch(url)
        if not fr.ok:
            return _Outcome(fr.reason_code, fr.status, fr.detail, fr.attempts, fr.elapsed)
        try:
            with decode_slots:  # memory: at most plan.decode_workers decodes at once
                image = process_image(fr.body or b"", cfg)
        except ImageRejected as e:
            return _Outcome(e.reason, fr.status, e.detail, fr.attempts, fr.elapsed)
        return _Outcome("ok", fr.status, "", fr.attempts, fr.elapsed, image)
    except Exception as e:  # noqa: BLE001 - one bad URL must not lose the other rows
        return _Outcome("internal_error", None, f"{type(e).__name__}: {e}"[:500])


def prepare_rows(rows: pl.DataFrame, snapshot: str) -> pl.DataFrame:
    """Input rows with every INPUT_SCHEMA column (missing optional ones null) and a `key`, sorted by key."""
    missing = [c for c in REQUIRED if c not in rows.columns]
    if missing:
        raise ValueError(f"acquire: input lacks required columns {missing}")
    cols = [pl.col(c).cast(t) if c in rows.columns else pl.lit(None, dtype=t).alias(c) for c, t in INPUT_SCHEMA.items()]
    df = rows.select(cols).with_columns(pl.col("snapshot").fill_null(snapshot))
    # text index: position among the image's texts in a content-defined order, so keys do not depend on input order
    df = df.sort("image_uuid", "url", "pair_id", "text").with_columns(
        pl.int_range(pl.len()).over("image_uuid").alias("_ti")
    )
    keys = [sample_key(u, i) for u, i in zip(df["image_uuid"].to_list(), df["_ti"].to_list())]
    return df.drop("_ti").with_columns(pl.Series("key", keys, dtype=pl.Utf8)).sort("key")


def plan_chunks(df: pl.DataFrame, snapshot: str, shard: int, samples_per_shard: int) -> list[_Chunk]:
    """Cut key-sorted rows into chunks of at most `samples_per_shard` rows without splitting an image
    (an image with more texts than that gets a chunk of its own)."""
    if samples_per_shard < 1:
        raise ValueError("samples_per_shard must be >= 1")
    chunks: list[_Chunk] = []
    current: list[dict[str, Any]] = []
    group: list[dict[str, Any]] = []

    def flush_group() -> None:
        nonlocal current
        if current and len(current) + len(group) > samples_per_shard:
            chunks.append(_Chunk(len(chunks), shard_stem(snapshot, shard, len(chunks)), current))
            current = []
        current.extend(group)

    for row in df.iter_rows(named=True):
        if group and row["image_uuid"] != group[0]["image_uuid"]:
            flush_group()
            group = []
        group.append(row)
    if group:
        flush_group()
    if current:
        chunks.append(_Chunk(len(chunks), shard_stem(snapshot, shard, len(chunks)), current))
    return chunks


def _sidecar(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}.samples.parquet"


def _load_complete(out_dir: Path, chunk: _Chunk, fingerprint: str) -> pl.DataFrame | None:
    side = _sidecar(out_dir, chunk.stem)
    if not side.exists():
        return None
    try:
        df = pl.read_parquet(side)
        if "faces_blurred" not in df.columns:  # sidecars written before face blurring existed
            df = df.with_columns(pl.lit(None, dtype=pl.Int32).alias("faces_blurred")).select(list(SAMPLE_SCHEMA))
    except Exception:  # noqa: BLE001 - an unreadable sidecar just means "redo this chunk"
        return None
    if df["key"].to_list() != chunk.keys or (df["config"] != fingerprint).any():
        return None
    if (df["reason_code"] == "ok").any() and not (out_dir / f"{chunk.stem}.tar").exists():
        return None
    return df


def _record(
    row: dict[str, Any],
    chunk: _Chunk,
    reason: str,
    fingerprint: str,
    *,
    out: _Outcome | None = None,
    tar: str | None = None,
    duplicate_of: str | None = None,
) -> dict[str, Any]:
    rec = {k: row.get(k) for k in SAMPLE_SCHEMA if k in row}
    img = out.image if out is not None else None
    detail = f"same bytes as image {duplicate_of}" if duplicate_of else (out.detail if out else "")
    rec.update(
        shard_index=chunk.n,
        tar=tar,
        reason_code=reason,
        config=fingerprint,
        duplicate_of=duplicate_of,
        status=out.status if out else None,
        detail=detail,
        attempts=out.attempts if out else None,
        fetch_seconds=out.seconds if out else None,
        sha256=img.sha256 if img else None,
        original_width=img.original_width if img else None,
        original_height=img.original_height if img else None,
        width=img.width if img else None,
        height=img.height if img else None,
        faces_blurred=img.faces if img else None,
    )
    return rec


def _write_chunk(
    out_dir: Path,
    chunk: _Chunk,
    outcomes: dict[str, _Outcome],
    prev: pl.DataFrame | None,
    seen: dict[str, str],
    fingerprint: str,
) -> pl.DataFrame:
    """Decide every row of the chunk, write its shard and sidecar; returns the sidecar frame."""
    tar_name = f"{chunk.stem}.tar"
    tar_path, side = out_dir / tar_name, _sidecar(out_dir, chunk.stem)
    prev_rows = {r["key"]: r for r in prev.iter_rows(named=True)} if prev is not None else {}
    records: list[dict[str, Any]] = []
    payload: list[tuple[str, ProcessedImage | None, dict[str, Any]]] = []  # ok rows: (key, new image | carried)
    decided: dict[str, tuple[str, str | None]] = {}  # url -> (reason, duplicate_of) once decided in key order
    for row in chunk.rows:
        url = row["url"]
        out = outcomes.get(url)
        if out is None:  # carried over unchanged from the complete sidecar (a retry touches failures only)
            old = prev_rows[row["key"]]
            records.append(old)
            if old["reason_code"] == "ok":
                payload.append((row["key"], None, old))
            continue
        if url not in decided:
            if out.reason == "ok" and out.image is not None:
                first = seen.setdefault(out.image.sha256, row["image_uuid"])
                decided[url] = ("ok", None) if first == row["image_uuid"] else ("duplicate", first)
            else:
                decided[url] = (out.reason, None)
        reason, dup = decided[url]
        rec = _record(
            row, chunk, reason, fingerprint, out=out, tar=tar_name if reason == "ok" else None, duplicate_of=dup
        )
        records.append(rec)
        if reason == "ok":
            payload.append((row["key"], out.image, rec))
    frame = pl.DataFrame(records, schema=SAMPLE_SCHEMA)

    ok_keys = [k for k, _, _ in payload]
    prev_ok = [r["key"] for r in prev_rows.values() if r["reason_code"] == "ok"]
    if ok_keys != prev_ok or not tar_path.exists() or prev is None:
        side.unlink(missing_ok=True)  # the chunk is incomplete from here until the new sidecar lands
        if payload:
            old_members = read_members(tar_path) if any(img is None for _, img, _ in payload) else {}
            with ShardWriter(tar_path) as w:
                for key, img, rec in payload:
                    if img is None:  # kept sample of an earlier run: copy its exact bytes
                        for ext in ("jpg", "txt", "json"):
                            w.add_member(f"{key}.{ext}", old_members[f"{key}.{ext}"])
                    else:
                        w.add(key, img.jpeg, rec["text"] or "", {k: rec.get(k) for k in _JSON_FIELDS})
        else:
            tar_path.unlink(missing_ok=True)
    write_parquet_atomic(frame, side)
    return frame


def acquire(
    rows: pl.DataFrame,
    source: ImageSource,
    out_dir: str | Path,
    *,
    snapshot: str,
    shard: int = 0,
    samples_per_shard: int = 1000,
    image_size: int = 256,
    resize_mode: str = "center_crop",
    jpeg_quality: int = 95,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_image_size: int = 0,
    blur_faces: bool = False,
    retry_failed: bool = False,
    workers: int = 16,
    plan: WorkerPlan | None = None,
    progress: Progress | None = None,
    progress_every_s: float = 5.0,
    seen_sha256: Mapping[str, str] | None = None,
) -> AcquireResult:
    """Fetch, decode and shard `rows` (curated pairs) into `out_dir` as `<snapshot>-<shard>-<n>.tar`.

    Re-running skips complete shards; `retry_failed=True` re-fetches the failed rows of complete shards
    (duplicates excepted) and rebuilds those shards. `seen_sha256` (sha256 -> image_uuid) lets the caller
    extend dedup to images kept by other shards of the snapshot. `progress(counts, rate)` is called after
    every shard and at most every `progress_every_s` seconds while one is being fetched. `plan` (default:
    `plan_workers` for `workers` and this process's capacity) sets the fetch threads and the decode slots.
    """
    start = time.monotonic()
    cfg = ProcessConfig(
        image_size=image_size,
        resize_mode=resize_mode,
        jpeg_quality=jpeg_quality,
        max_pixels=max_pixels,
        min_image_size=min_image_size,
        blur_faces=blur_faces,
    )
    if blur_faces:
        load_detector()  # fail now, not as an internal_error on every row
    fingerprint = cfg.fingerprint()
    if plan is None:
        plan = plan_workers(cfg, detect(), workers=workers, body_bytes=getattr(source, "max_bytes", 16 << 20))
    decode_slots = threading.BoundedSemaphore(plan.decode_workers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = shard_prefix(snapshot, shard)
    for tmp in stale_temps(out, prefix):  # a killed run's leftovers: never complete, never read
        tmp.unlink(missing_ok=True)

    df = prepare_rows(rows, snapshot)
    chunks = plan_chunks(df, snapshot, shard, samples_per_shard)
    planned = {c.stem for c in chunks}
    for stale in [*shard_files(out, prefix, ".tar"), *shard_files(out, prefix, ".samples.parquet")]:
        if stale.name.split(".", 1)[0] not in planned:  # from a run with other rows or another shard size
            stale.unlink()

    done: dict[int, pl.DataFrame] = {}
    for c in chunks:
        prev = _load_complete(out, c, fingerprint)
        if prev is not None:
            done[c.n] = prev
    seen: dict[str, str] = dict(seen_sha256 or {})
    for prev in done.values():
        for sha, uuid in prev.filter(pl.col("reason_code") == "ok").select("sha256", "image_uuid").iter_rows():
            seen.setdefault(sha, uuid)

    def urls_to_fetch(c: _Chunk) -> list[str]:
        prev = done.get(c.n)
        if prev is None:
            return list(dict.fromkeys(r["url"] for r in c.rows))
        retry = prev.filter(~pl.col("reason_code").is_in(["ok", "duplicate"]))
        return list(dict.fromkeys(retry["url"].to_list()))

    todo = [(c, u) for c in chunks if (u := urls_to_fetch(c)) and (c.n not in done or retry_failed)]
    skipped = len(chunks) - len(todo)
    counts: Counter[str] = Counter()
    for n, prev in done.items():
        if all(c.n != n for c, _ in todo):
            counts.update(prev["reason_code"].to_list())
    processed = 0
    last_report = time.monotonic()

    def report(extra: Counter[str] | None = None) -> None:
        nonlocal last_report
        if progress is not None:
            elapsed = time.monotonic() - start
            progress(dict(counts + (extra or Counter())), processed / elapsed if elapsed > 0 else 0.0)
        last_report = time.monotonic()

    pool = ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="acquire")
    try:
        pending: dict[int, dict[str, Future[_Outcome]]] = {}

        def submit(i: int) -> None:
            if i < len(todo):
                c, urls = todo[i]
                pending[c.n] = {u: pool.submit(_work, source, u, cfg, decode_slots) for u in urls}

        submit(0)
        for i, (c, _urls) in enumerate(todo):
            submit(i + 1)  # fetch the next chunk while this one finishes and is written
            futures = pending.pop(c.n)
            rows_per_url = Counter(r["url"] for r in c.rows)
            waiting = set(futures.values())
            while waiting:
                _, waiting = wait(waiting, timeout=progress_every_s, return_when=FIRST_COMPLETED)
                if time.monotonic() - last_report >= progress_every_s:
                    partial: Counter[str] = Counter()
                    for u, f in futures.items():
                        if f.done():
                            partial[f.result().reason] += rows_per_url[u]
                    report(partial)
            outcomes = {u: f.result() for u, f in futures.items()}
            frame = _write_chunk(out, c, outcomes, done.get(c.n), seen, fingerprint)
            done[c.n] = frame
            counts.update(frame["reason_code"].to_list())
            processed += sum(rows_per_url[u] for u in outcomes)
            report()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

    sidecars = [done[c.n] for c in chunks]
    allrows = pl.concat(sidecars) if sidecars else pl.DataFrame(schema=SAMPLE_SCHEMA)
    index_path, failures_path = out / f"{prefix}.index.parquet", out / f"{prefix}.failures.parquet"
    write_parquet_atomic(allrows.filter(pl.col("reason_code") == "ok"), index_path)
    write_parquet_atomic(allrows.filter(pl.col("reason_code") != "ok"), failures_path)
    final_counts = Counter(allrows["reason_code"].to_list())
    shards = [out / f"{c.stem}.tar" for c in chunks if (done[c.n]["reason_code"] == "ok").any()]
    return AcquireResult(
        out_dir=out,
        shards=shards,
        index_path=index_path,
        failures_path=failures_path,
        counts=dict(final_counts),
        rows=df.height,
        images=df["url"].n_unique() if df.height else 0,
        shards_written=len(todo),
        shards_skipped=skipped,
        elapsed_s=time.monotonic() - start,
        processed_rows=processed,
        transient_failures=sum(final_counts[r] for r in TRANSIENT),
        plan=plan,
        **face_counts(allrows.filter(pl.col("reason_code") == "ok")),
    )


def face_counts(index: pl.DataFrame) -> dict[str, int]:
    """images_with_faces / faces_blurred of an index: per distinct image (its texts share one JPEG)."""
    per_image = index.filter(pl.col("faces_blurred") > 0).unique("image_uuid")
    return {"images_with_faces": per_image.height, "faces_blurred": int(per_image["faces_blurred"].sum() or 0)}


__all__ = [
    "AcquireResult",
    "INPUT_SCHEMA",
    "SAMPLE_SCHEMA",
    "WorkerPlan",
    "acquire",
    "plan_chunks",
    "plan_workers",
    "prepare_rows",
]
