"""The acquisition assets' checks as plain functions over the files on disk, returning `CheckResult`s.

They read what was written (tars, index and failure tables), so tests can also run them on damaged folders.
Imports storage and layout, never Dagster.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import orjson
import polars as pl
from PIL import Image

from metaclip_assets import layout
from metaclip_assets.acquisition.shards import shard_files, shard_prefix
from metaclip_assets.acquisition.source import REASONS
from metaclip_assets.checks import CheckResult
from metaclip_assets.storage import Storage

SHARDS_READABLE = "shards_readable"
NOTHING_LOST = "nothing_lost"
ACCOUNTS_FOR_CURATED_SUBSET = "accounts_for_curated_subset"
# What each check asserts, as the UI shows it beside the check.
DESCRIPTIONS = {
    SHARDS_READABLE: "webdataset reads back exactly the index's samples, each with jpg, txt, json",
    NOTHING_LOST: "index rows + failure rows == this shard's curated rows, each pair once",
    ACCOUNTS_FOR_CURATED_SUBSET: "Every pair of the current balanced subset is in exactly one shard's index or failure "
    "table, and every tar in the folder is listed in an index (no stale or foreign tars for training to pick up).",
}
SAMPLE_MEMBERS = ("jpg", "txt", "json")


def read_samples(tars: list[Path]) -> tuple[list[dict], str]:
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


def shards_readable(storage: Storage, snapshot: str, shard: int) -> CheckResult:
    """The tars on disk, read with webdataset, hold exactly the index's samples, each complete and sound."""
    out_dir = storage.local_path(layout.shards_dir(snapshot))
    index = storage.read_parquet(
        layout.acquisition_index_key(snapshot, shard), columns=["key", "tar", "width", "height"]
    )
    listed = sorted(set(index["tar"].to_list()))
    on_disk = shard_files(out_dir, shard_prefix(snapshot, shard), ".tar")
    missing_tars = [t for t in listed if not (out_dir / t).exists()]
    unlisted_tars = [p.name for p in on_disk if p.name not in listed]
    try:
        samples, reader = read_samples(on_disk)
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
    return CheckResult(
        SHARDS_READABLE,
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
            "missing_tars": missing_tars,
            "unlisted_tars": unlisted_tars,
            "incomplete_samples": len(incomplete),
            "wrong_key_or_size": len(wrong),
            "error": error or "",
        },
    )


def nothing_lost(storage: Storage, rows: pl.DataFrame, snapshot: str, shard: int) -> CheckResult:
    """Index rows + failure rows are this shard's curated `rows`, each pair exactly once, with valid reasons."""
    cols = ["pair_id", "reason_code"]
    index = storage.read_parquet(layout.acquisition_index_key(snapshot, shard), columns=cols)
    failures = storage.read_parquet(layout.acquisition_failures_key(snapshot, shard), columns=cols)
    got = pl.concat([index, failures])["pair_id"]
    want = set(rows["pair_id"].to_list())
    lost, invented = len(want - set(got.to_list())), len(set(got.to_list()) - want)
    bad_codes = sorted(
        {*failures["reason_code"].to_list()} - (REASONS.keys() - {"ok"}) | {*index["reason_code"].to_list()} - {"ok"}
    )
    return CheckResult(
        NOTHING_LOST,
        passed=len(got) == len(rows) and not lost and not invented and got.n_unique() == len(got) and not bad_codes,
        metadata={
            "input_rows": len(rows),
            "index_rows": len(index),
            "failure_rows": len(failures),
            "lost": lost,
            "invented": invented,
            "repeated": len(got) - got.n_unique(),
            "unknown_reason_codes": bad_codes,
        },
    )


def accounts_for_curated_subset(
    curated: pl.Series, index: pl.DataFrame, failures: pl.DataFrame, tars_on_disk: list[str]
) -> CheckResult:
    """Every curated pair id is in exactly one index or failure row, and every tar on disk is in the index."""
    accounted = pl.concat([index["pair_id"], failures["pair_id"]])
    stray = sorted(set(tars_on_disk) - set(index["tar"].to_list()))
    unaccounted = len(set(curated.to_list()) - set(accounted.to_list()))
    extra = len(set(accounted.to_list()) - set(curated.to_list()))
    return CheckResult(
        ACCOUNTS_FOR_CURATED_SUBSET,
        passed=unaccounted == 0 and extra == 0 and accounted.n_unique() == len(accounted) and not stray,
        metadata={
            "curated": len(curated),
            "accounted": len(accounted),
            "unaccounted": unaccounted,
            "not_in_curated": extra,
            "repeated": len(accounted) - accounted.n_unique(),
            "stray_tars": stray,
        },
    )
