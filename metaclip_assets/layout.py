"""Every path under the data root, in one place, so readers and writers cannot drift apart: relative storage keys
(joined to the root by `storage.Storage`, or by the launched process to the root it sees).

Per-shard artifacts live under ``shards-<N>/`` so files from a run with another shard count are never mixed in.
Imports nothing but the standard library: the training image ships this file with `settings.py`.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no dots either: webdataset splits a member name at its first dot

# What a snapshot may be called: CommonCrawl's ids, or a custom name of letters, digits, '-' and '_' (no '/', '.',
# '|', spaces or newlines: it becomes a folder name, a Dagster partition key and part of a multi-partition key).
CC_SNAPSHOT = r"CC-MAIN-\d{4}-\d{2}"
CUSTOM_SNAPSHOT = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
SNAPSHOT_ID = re.compile(rf"{CC_SNAPSHOT}|{CUSTOM_SNAPSHOT}")
# Experiment and model names (folder names under training/, evaluation/, exports/): dots allowed, never alone.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def snapshot_id(snapshot: str) -> str:
    """`snapshot` if it is a valid snapshot id, else ValueError showing the pattern (names are paths: see above)."""
    if not isinstance(snapshot, str) or not SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(
            f"invalid snapshot id {snapshot!r}: use CommonCrawl's CC-MAIN-YYYY-WW or a custom name matching "
            f"{CUSTOM_SNAPSHOT} (letters, digits, '-' and '_'; at most 64 characters)"
        )
    return snapshot


def _experiment_model(experiment: str, model: str) -> str:
    return f"{name_component(experiment, 'experiment')}/{name_component(model, 'model')}"


def name_component(name: str, what: str = "name") -> str:
    """An experiment or model name used as one folder: ValueError unless it matches the pattern."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '.', '-' and '_' (a folder name)")
    return name


METADATA_CURRENT = "metadata/current.json"
SHARDS_DIR = "shards"  # training reads <shard root>/<snapshot>/*.tar; the shard root defaults to <data_root>/shards


def metadata_dir(sha256: str) -> str:
    return f"metadata/{sha256[:16]}"


def shard_key(stage: str, snapshot: str, shard: int, num_shards: int, ext: str = "parquet") -> str:
    return f"{stage}/{snapshot_id(snapshot)}/shards-{num_shards}/{shard:03d}.{ext}"


def pool_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("pool", snapshot, shard, num_shards)


def pool_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("pool", snapshot, shard, num_shards, "stats.json")


def matched_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("matched", snapshot, shard, num_shards)


def matched_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("matched", snapshot, shard, num_shards, "stats.json")


# ---- snapshot outputs: keyed by shard and bucket count ---------------------------------------------------------
# The snapshot steps reduce the matched shards bucket by bucket (a bucket: the pairs whose pair_id falls in one of
# `num_buckets` equal ranges), so each step holds one bucket, never the snapshot. Their outputs live under
# `<stage>/<snapshot>/shards-<N>/buckets-<B>/`: curating a snapshot again with another shard or bucket count writes
# beside, never over, an earlier curation.
def curation_dir(stage: str, snapshot: str, num_shards: int, num_buckets: int) -> str:
    return f"{stage}/{snapshot_id(snapshot)}/shards-{int(num_shards)}/buckets-{int(num_buckets)}"


def counts_key(snapshot: str, num_shards: int, num_buckets: int, cumulative: bool = False) -> str:
    name = f"entry_counts{'_cumulative' if cumulative else ''}.npy"
    return f"{curation_dir('counts', snapshot, num_shards, num_buckets)}/{name}"


def counts_summary_key(snapshot: str, num_shards: int, num_buckets: int) -> str:
    return f"{curation_dir('counts', snapshot, num_shards, num_buckets)}/summary.json"


def dedup_bucket_key(snapshot: str, num_shards: int, num_buckets: int, bucket: int) -> str:
    """One bucket of the snapshot's matched pairs, deduplicated across shards."""
    return f"{curation_dir('counts', snapshot, num_shards, num_buckets)}/matched-{bucket:04d}.parquet"


def balanced_bucket_key(snapshot: str, num_shards: int, num_buckets: int, bucket: int) -> str:
    """One bucket of the balanced (curated) subset."""
    return f"{curation_dir('balanced', snapshot, num_shards, num_buckets)}/curated-{bucket:04d}.parquet"


def balanced_summary_key(snapshot: str, num_shards: int, num_buckets: int) -> str:
    return f"{curation_dir('balanced', snapshot, num_shards, num_buckets)}/summary.json"


def datacard_dir(snapshot: str, num_shards: int, num_buckets: int) -> str:
    return curation_dir("datacard", snapshot, num_shards, num_buckets)


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
    return f"{CRAWL_DIR}/{snapshot_id(snapshot)}"


def image_warc_dir(snapshot: str) -> str:
    """WARC files with a snapshot's image responses (replayed by the `warc` image source)."""
    return f"images/{snapshot_id(snapshot)}"


IMAGE_WARC_GLOB = "images/{snapshot}/*.warc.gz"  # image_warc_dir's folder; {snapshot}: the partition's snapshot


def sample_manifest_key(snapshot: str, suffix: str = ".json") -> str:
    """The bundled sample generator's manifest (.json) and its list of every pair (.pairs.jsonl.gz)."""
    return f"manifests/{snapshot_id(snapshot)}{suffix}"


# ---- metadata -------------------------------------------------------------------------------------------------
def metadata_json_key(sha256: str) -> str:
    return f"{metadata_dir(sha256)}/metadata.json"


def metadata_entries_key(sha256: str) -> str:
    return f"{metadata_dir(sha256)}/entries.parquet"


# ---- worldwide metadata (metadata/worldwide.py): one folder per language; English reuses the v1 metadata above
METADATA_WORLDWIDE_DIR = "metadata/worldwide"
_LANG = re.compile(r"[a-z]{2,10}(?:_[a-z]{2,10})*")  # Wikipedia codes: de, zh_yue, bat_smg, simple
WIKI_LANGUAGE_DUMP_GLOBS = tuple(f"{WIKIPEDIA_DIR}/{{lang}}/*{ext}" for ext in (".xml", ".xml.bz2", ".xml.gz"))
OMW_GLOBS = ("omw/*.tab", "omw/*/*.tab")  # NLTK's omw-1.4 layout: omw-1.4/<code>/wn-data-<code>.tab


def metadata_language(lang: str) -> str:
    """`lang` if it looks like a Wikipedia language code (a folder name), else ValueError."""
    if not isinstance(lang, str) or not _LANG.fullmatch(lang):
        raise ValueError(f"invalid language {lang!r}: use a Wikipedia language code such as 'de' or 'zh_yue'")
    return lang


def metadata_language_key(lang: str, sha256: str, name: str = "metadata.json") -> str:
    """A file of one language's metadata version: metadata.json, entries.parquet, build.json."""
    return f"{METADATA_WORLDWIDE_DIR}/{metadata_language(lang)}/{sha256[:16]}/{name}"


def metadata_language_current(lang: str) -> str:
    """The pointer to a language's current metadata version."""
    return f"{METADATA_WORLDWIDE_DIR}/{metadata_language(lang)}/current.json"


METADATA_LANGUAGE_POINTERS = f"{METADATA_WORLDWIDE_DIR}/*/current.json"  # a glob: every language's pointer


# ---- data card folder -----------------------------------------------------------------------------------------
DATACARD_PLOT = "cumulative_matches.png"  # also the relative link in datacard.md
# In the data card folder: the snapshot's curation run in MLflow ({run_id, experiment_id, tracking_uri, url,
# dataset}), written by curation/tracking.py and read by the training that trains on the snapshot.
DATACARD_MLFLOW_RUN = "mlflow_run.json"


def datacard_key(snapshot: str, num_shards: int, num_buckets: int, name: str = "datacard.json") -> str:
    """A file of the data card folder: datacard.json (entry -> count after), datacard.md, summary.json,
    entry_counts_before.json, cumulative_matches.png, acquisition.json, acquisition.md."""
    return f"{datacard_dir(snapshot, num_shards, num_buckets)}/{name}"


# ---- acquisition ----------------------------------------------------------------------------------------------
def shards_dir(snapshot: str) -> str:
    return f"{SHARDS_DIR}/{snapshot_id(snapshot)}"  # training reads <shard_root>/<snapshot>/*.tar


def acquisition_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("acquisition", snapshot, shard, num_shards, "stats.json")


def warc_index_key(snapshot: str, stamp: str) -> str:
    return f"acquisition/{snapshot_id(snapshot)}/warc-index-{stamp}.parquet"


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


def training_snapshot_dir(experiment: str, model: str, snapshot: str) -> str:
    """Every training of (experiment, model) on one snapshot: one folder per run version, and the pointer."""
    return f"training/{_experiment_model(experiment, model)}/{snapshot_id(snapshot)}"


def training_run_dir(experiment: str, model: str, snapshot: str, version: str | None = None) -> str:
    """One training's output dir (final.pt, checkpoints/latest.pt, run.json): `<snapshot dir>/<version>`, where the
    version hashes what determines the result (training/plan.py), so no run overwrites another's. Without a version:
    the snapshot dir itself, the layout before versions (still read when a snapshot has no pointer)."""
    base = training_snapshot_dir(experiment, model, snapshot)
    return f"{base}/{version}" if version else base


FINAL_CHECKPOINT = "final.pt"  # in a training run dir: what the next snapshot warm-starts from, evaluated, exported
LATEST_CHECKPOINT = "checkpoints/latest.pt"  # in a training run dir: the periodic, resumable state
RUN_RECORD = "run.json"  # in a training run dir: what the run was trained from, written after it succeeded
TRAINING_POINTER = "latest.json"  # in a training snapshot dir: the run version readers use (a copy of its run.json)


def training_checkpoint_key(experiment: str, model: str, snapshot: str, version: str | None = None) -> str:
    """The final checkpoint of one training."""
    return f"{training_run_dir(experiment, model, snapshot, version)}/{FINAL_CHECKPOINT}"


def training_record_key(experiment: str, model: str, snapshot: str, version: str) -> str:
    return f"{training_run_dir(experiment, model, snapshot, version)}/{RUN_RECORD}"


def training_pointer_key(experiment: str, model: str, snapshot: str) -> str:
    """Which run version of the snapshot the next snapshot's warm start, evaluation and export read."""
    return f"{training_snapshot_dir(experiment, model, snapshot)}/{TRAINING_POINTER}"


def export_dir(experiment: str, model: str, snapshot: str) -> str:
    """The exports of one training's final checkpoint: open_clip/ (hub layout) and hf/ (transformers CLIPModel)."""
    return f"exports/{_experiment_model(experiment, model)}/{snapshot_id(snapshot)}"


def eval_set_dir(snapshot: str) -> str:
    """The snapshot's held-out zero-shot split, an image folder <class>/<image>."""
    return f"eval/{snapshot_id(snapshot)}"


def evaluation_dir(experiment: str, model: str, snapshot: str) -> str:
    """One evaluation's output dir: metrics.json, report.md, matrix.json, matrix.png, eval_config.json."""
    return f"evaluation/{_experiment_model(experiment, model)}/{snapshot_id(snapshot)}"


def evaluation_cache_dir(experiment: str, model: str) -> str:
    """Cached scores per (checkpoint, eval set), shared by every snapshot of one experiment and model."""
    return f"evaluation/{_experiment_model(experiment, model)}/cache"
