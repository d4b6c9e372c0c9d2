"""Every path under the data root, in one place, so readers and writers cannot drift apart: relative storage keys
(joined to the root by `storage.Storage`, or by the launched process to the root it sees).

Per-shard artifacts live under ``shards-<N>/`` so files from a run with another shard count are never mixed in.
Imports nothing but the standard library: the training image ships this file with `settings.py`.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no dots either: webdataset splits a member name at its first dot

METADATA_CURRENT = "metadata/current.json"
SHARDS_DIR = "shards"  # training reads <shard root>/<snapshot>/*.tar; the shard root defaults to <data_root>/shards


def metadata_dir(sha256: str) -> str:
    return f"metadata/{sha256[:16]}"


def shard_key(stage: str, snapshot: str, shard: int, num_shards: int, ext: str = "parquet") -> str:
    return f"{stage}/{snapshot}/shards-{num_shards}/{shard:03d}.{ext}"


def pool_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("pool", snapshot, shard, num_shards)


def pool_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("pool", snapshot, shard, num_shards, "stats.json")


def matched_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("matched", snapshot, shard, num_shards)


def matched_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("matched", snapshot, shard, num_shards, "stats.json")


def counts_key(snapshot: str, cumulative: bool = False) -> str:
    return f"counts/{snapshot}/entry_counts{'_cumulative' if cumulative else ''}.npy"


def counts_summary_key(snapshot: str) -> str:
    return f"counts/{snapshot}/summary.json"


def merged_matched_key(snapshot: str) -> str:
    return f"counts/{snapshot}/matched_dedup.parquet"


def balanced_key(snapshot: str) -> str:
    return f"balanced/{snapshot}/curated.parquet"


def balanced_summary_key(snapshot: str) -> str:
    return f"balanced/{snapshot}/summary.json"


def datacard_dir(snapshot: str) -> str:
    return f"datacard/{snapshot}"


# ---- inputs under the data root ----------------------------------------------------------------------------
CRAWL_DIR = "crawl"  # <crawl root>/<snapshot>/*.wat.gz and *.warc.gz; the crawl root defaults to <data_root>/crawl
WIKIPEDIA_DIR = "wikipedia"  # MediaWiki exports; pageview dumps in its pageviews/ folder
PAGEVIEWS_DIR = f"{WIKIPEDIA_DIR}/pageviews"
WIKI_DUMP_GLOBS = (f"{WIKIPEDIA_DIR}/*.xml", f"{WIKIPEDIA_DIR}/*.xml.bz2", f"{WIKIPEDIA_DIR}/*.xml.gz")
PAGEVIEW_GLOBS = (f"{PAGEVIEWS_DIR}/pageviews-*",)


def crawl_root(data_root: str) -> str:
    return f"{data_root.rstrip('/')}/{CRAWL_DIR}"


def crawl_dir(snapshot: str) -> str:
    """A snapshot's crawl files under the default crawl root."""
    return f"{CRAWL_DIR}/{snapshot}"


def image_warc_dir(snapshot: str) -> str:
    """WARC files with a snapshot's image responses (replayed by the `warc` image source)."""
    return f"images/{snapshot}"


IMAGE_WARC_GLOB = f"{image_warc_dir('{snapshot}')}/*.warc.gz"  # {snapshot}: the partition's snapshot


def sample_manifest_key(snapshot: str, suffix: str = ".json") -> str:
    """The bundled sample generator's manifest (.json) and its list of every pair (.pairs.jsonl.gz)."""
    return f"manifests/{snapshot}{suffix}"


# ---- metadata -------------------------------------------------------------------------------------------------
def metadata_json_key(sha256: str) -> str:
    return f"{metadata_dir(sha256)}/metadata.json"


def metadata_entries_key(sha256: str) -> str:
    return f"{metadata_dir(sha256)}/entries.parquet"


# ---- data card folder -----------------------------------------------------------------------------------------
DATACARD_PLOT = "cumulative_matches.png"  # also the relative link in datacard.md


def datacard_key(snapshot: str, name: str = "datacard.json") -> str:
    """A file of the data card folder: datacard.json (entry -> count after), datacard.md, summary.json,
    entry_counts_before.json, cumulative_matches.png, acquisition.json, acquisition.md."""
    return f"{datacard_dir(snapshot)}/{name}"


# ---- acquisition ----------------------------------------------------------------------------------------------
def shards_dir(snapshot: str) -> str:
    return f"{SHARDS_DIR}/{snapshot}"  # training reads <shard_root>/<snapshot>/*.tar


def acquisition_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("acquisition", snapshot, shard, num_shards, "stats.json")


def warc_index_key(snapshot: str, stamp: str) -> str:
    return f"acquisition/{snapshot}/warc-index-{stamp}.parquet"


def acquisition_index_key(snapshot: str, shard: int) -> str:
    return f"{shards_dir(snapshot)}/{shard_prefix(snapshot, shard)}.index.parquet"


def acquisition_failures_key(snapshot: str, shard: int) -> str:
    return f"{shards_dir(snapshot)}/{shard_prefix(snapshot, shard)}.failures.parquet"


def safe_component(text: str) -> str:
    """A snapshot name usable in file names everywhere (no path separators, dots, spaces, reserved chars)."""
    out = _UNSAFE.sub("_", text).strip("_")
    if not out:
        raise ValueError(f"{text!r} has no file-name-safe characters")
    return out


def shard_prefix(snapshot: str, shard: int) -> str:
    """Name prefix of one acquisition shard's files in the snapshot's shards folder (tars, index, failures)."""
    return f"{safe_component(snapshot)}-{shard:03d}"


# ---- training and evaluation ----
# Joined by training/plan.py and evaluation/plan.py to the data root as the launched process sees it (a pod's
# mount, an object store URL).
MLFLOW_DB = "mlflow/mlflow.db"  # the default MLflow store (training/tracking.py sqlite_store_uri)


def training_run_dir(experiment: str, model: str, snapshot: str) -> str:
    """One training's output dir (final.pt, checkpoints/latest.pt); the next snapshot warm-starts from it."""
    return f"training/{experiment}/{model}/{snapshot}"


def eval_set_dir(snapshot: str) -> str:
    """The snapshot's held-out zero-shot split, an image folder <class>/<image>."""
    return f"eval/{snapshot}"


def evaluation_dir(experiment: str, model: str, snapshot: str) -> str:
    """One evaluation's output dir: metrics.json, report.md, matrix.json, matrix.png, eval_config.json."""
    return f"evaluation/{experiment}/{model}/{snapshot}"


def evaluation_cache_dir(experiment: str, model: str) -> str:
    """Cached scores per (checkpoint, eval set), shared by every snapshot of one experiment and model."""
    return f"evaluation/{experiment}/{model}/cache"
