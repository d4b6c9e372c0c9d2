"""The per-snapshot acquisition report: every shard's index, failures and stats -> acquisition.json / .md in
the data card folder, and the `accounts_for_curated_subset` check. Imports storage and layout, never Dagster."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from metaclip_assets import layout, settings
from metaclip_assets.acquisition import checks
from metaclip_assets.acquisition.pipeline import face_counts
from metaclip_assets.acquisition.source import REASONS, TRANSIENT
from metaclip_assets.checks import CheckResult
from metaclip_assets.curation.steps import read_curated
from metaclip_assets.storage import Storage

PER_SHARD_FIELDS = (
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
        # fetch / decode workers and the memory arithmetic behind them, per shard (pods may differ)
        "workers": [{"shard": s["shard"], **s["workers"]} for s in stats if s.get("workers")],
        "per_shard": [{k: s[k] for k in PER_SHARD_FIELDS} | {"tars": len(s["tars"])} for s in stats],
        "failure_examples": examples,
        # blur_faces: distinct images kept with faces pixelated, and how many faces (0 when it was off)
        **(face_counts(index) if "faces_blurred" in index.columns else {"images_with_faces": 0, "faces_blurred": 0}),
    }


def _workers_lines(plans: list[dict]) -> list[str]:
    """One line per distinct plan: how many fetched, how many decoded at once, and the memory that allowed it."""
    mib = 1 << 20
    lines: dict[str, list[int]] = {}
    for p in plans:
        text = (
            f"{p['workers']} fetch / {p['decode_workers']} decode workers: {p['workers']} x {p['body_bytes'] // mib} "
            f"MiB bodies + {p['decode_workers']} x {p['decode_bytes'] // mib} MiB worst-case decodes = "
            f"{p['worst_case_bytes'] // mib} MiB of a {p['memory_budget'] // mib} MiB budget "
            f"({p['memory_fraction']:.0%} of {p['memory_bytes'] // mib} MiB, {p['memory_source']}; {p['cpus']} CPUs, "
            f"{p['cpu_source']}){'' if p['fits'] else ' - OVER BUDGET'}"
        )
        lines.setdefault(text, []).append(p["shard"])
    return [f"Shard(s) {', '.join(map(str, shards))}: {text}." for text, shards in lines.items()] + [""] * bool(lines)


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
        f"under different URLs in different shards: {s['cross_shard_duplicate_images']:,}. Faces blurred: "
        f"{s.get('faces_blurred', 0):,} in {s.get('images_with_faces', 0):,} image(s)"
        f"{'' if cfg.get('blur_faces') else ' (face blurring off)'}.",
        "",
        "| reason | pairs | share | meaning |",
        "|---|---:|---:|---|",
        *[
            f"| `{r}` | {n:,} | {n / max(s['rows'], 1):.1%} | {s['reason_meanings'].get(r, '')} |"
            for r, n in s["reasons"].items()
        ],
        "",
        *_workers_lines(s.get("workers", [])),
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


@dataclass
class Report:
    summary: dict  # what acquisition.json holds
    markdown: str  # what acquisition.md holds
    json_uri: str
    md_uri: str
    shards_dir: str  # a path, or the URL under an object-store data root
    check: CheckResult


def write_report(storage: Storage, snapshot: str, num_shards: int, num_buckets: int | None = None) -> Report:
    """Aggregate every shard of `snapshot` into the data card folder; check it against the balanced subset."""
    missing = [
        s
        for s in range(num_shards)
        if not storage.exists(layout.acquisition_stats_key(snapshot, s, num_shards))
        or not storage.exists(layout.acquisition_index_key(snapshot, s))
        or not storage.exists(layout.acquisition_failures_key(snapshot, s))
    ]
    if missing:
        raise FileNotFoundError(
            f"shards {missing} of {snapshot} have no acquisition results yet: materialize "
            f"webdataset_shards for every shard of {snapshot} first"
        )
    stats = [storage.read_json(layout.acquisition_stats_key(snapshot, s, num_shards)) for s in range(num_shards)]
    index = pl.concat([storage.read_parquet(layout.acquisition_index_key(snapshot, s)) for s in range(num_shards)])
    failures = pl.concat(
        [storage.read_parquet(layout.acquisition_failures_key(snapshot, s)) for s in range(num_shards)]
    )
    summary = summarize(snapshot, stats, index, failures)
    buckets = num_buckets or settings.num_buckets()
    json_uri = storage.write_json(
        layout.datacard_key(snapshot, num_shards, buckets, "acquisition.json"), summary, indent=2
    )
    md = report_markdown(summary)
    md_uri = storage.write_text(layout.datacard_key(snapshot, num_shards, buckets, "acquisition.md"), md)
    # Against the balanced subset as it is now: a re-balanced snapshot makes older shards stale.
    curated = pl.concat(
        [b["pair_id"] for b in read_curated(storage, snapshot, num_shards, buckets, columns=["pair_id"])]
    )
    tars_on_disk = sorted(k.rsplit("/", 1)[-1] for k in storage.list(layout.shards_dir(snapshot), (".tar",)))
    check = checks.accounts_for_curated_subset(curated, index, failures, tars_on_disk)
    return Report(summary, md, json_uri, md_uri, storage.uri(layout.shards_dir(snapshot)), check)
