"""A snapshot's curation as an MLflow run, so that one MLflow view goes from crawl to metrics: params (metadata
hash, t, seed, count mode, shards, buckets), metrics (the funnel, curated pairs, tail shares, every count of the
data card), the data card folder as artifacts and the curated set as an `mlflow.data` dataset. The run is recorded
next to the card (layout.DATACARD_MLFLOW_RUN); the training of the snapshot reads that record, tags its own run with
the curation run and logs the same dataset as its input.

The dataset is a `MetaDataset` (metadata only: a source URI, a digest, a schema) whose source is the balanced
folder: nothing of the curated set is loaded, only one parquet footer for the schema. Its digest is the data card
hash the training logs as `data_card_sha256` (the same files, hashed the same way).

The MLflow client comes in as a tracker (training/tracking.py `Tracker`, built by the caller): curation must not
import `training`, which owns the tracking store and its defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from metaclip_assets import layout
from metaclip_assets.storage import Storage, local_files

if TYPE_CHECKING:  # the training process reads records here without the curation steps
    from metaclip_assets.curation.steps import SnapshotCard

# The files training/plan.py lists as a training's data_card_paths: the digest hashes exactly these.
CARD_HASHED = ("datacard.json", "summary.json")
PARAMS = ("metadata_sha256", "t", "seed", "count_mode")  # of the data card's summary; the rest are metrics
TABLES = ("head_table", "tail_table")  # rows, not numbers: in the artifacts only
DIGEST_CHARS = 16  # MLflow keeps at most 36 characters of a dataset digest
CONTEXT_TAG = "mlflow.data.context"  # what mlflow.log_input(context=...) sets: the UI shows it beside the dataset


@dataclasses.dataclass(frozen=True)
class CurationRun:
    run_id: str
    experiment_id: str
    tracking_uri: str
    url: str
    data_card_sha256: str
    dataset: dict | None  # MetaDataset.to_dict(); None when MLflow has no source type for the storage's URL
    record_uri: str  # where the record (layout.DATACARD_MLFLOW_RUN) was written
    seconds: float  # what logging the run added to the data card step

    def record(self) -> dict:
        return {k: getattr(self, k) for k in ("run_id", "experiment_id", "tracking_uri", "url")} | {
            "data_card_sha256": self.data_card_sha256,
            "dataset": self.dataset,
        }


def log_curation_run(
    storage: Storage, snapshot: str, card: SnapshotCard, num_shards: int, num_buckets: int, tracker
) -> CurationRun:
    """Log the snapshot's curation as a new run of `tracker`'s experiment (a training/tracking.py `Tracker`) and
    write the record next to the data card. Call after `steps.card_for_snapshot` wrote the card folder."""
    started = time.perf_counter()
    n, b = num_shards, num_buckets
    summary = card.card.summary()
    sha = data_card_sha256(
        {name: storage.read_bytes(layout.datacard_key(snapshot, n, b, name)) for name in CARD_HASHED}
    )
    balanced_dir = layout.curation_dir("balanced", snapshot, n, b)
    run = tracker.client.create_run(
        tracker.experiment_id,
        run_name=f"curation/{snapshot}",
        tags={
            "snapshot": snapshot,
            "stage": "curation",
            "data_card_sha256": sha,
            "curated_uri": storage.uri(balanced_dir),
        },
    )
    tracker.run_id = run.info.run_id
    try:
        tracker.log_params({k: summary[k] for k in PARAMS} | {"snapshot": snapshot, "num_shards": n, "num_buckets": b})
        tracker.log_metrics([(0, metric_values({k: v for k, v in summary.items() if k not in PARAMS + TABLES}))])
        folder = layout.datacard_dir(snapshot, n, b)
        files = [k for k in storage.list(folder) if not k.endswith(f"/{layout.DATACARD_MLFLOW_RUN}")]
        with local_files(storage, files) as paths:
            for path in paths:
                tracker.log_artifact(path, "data_card")
        dataset = curated_dataset(storage, snapshot, n, b, sha)
        if dataset is not None:
            tracker.client.log_inputs(tracker.run_id, [dataset_input(dataset, "curation")])
        tracker.finish("FINISHED")
    except BaseException:
        tracker.finish("FAILED")
        raise
    result = CurationRun(
        run_id=tracker.run_id,
        experiment_id=tracker.experiment_id,
        tracking_uri=tracker.uri,
        url=tracker.run_url,
        data_card_sha256=sha,
        dataset=dataset,
        record_uri=storage.uri(layout.datacard_key(snapshot, n, b, layout.DATACARD_MLFLOW_RUN)),
        seconds=0.0,
    )
    storage.write_json(layout.datacard_key(snapshot, n, b, layout.DATACARD_MLFLOW_RUN), result.record(), indent=2)
    return dataclasses.replace(result, seconds=round(time.perf_counter() - started, 3))


def forget_curation_run(storage: Storage, snapshot: str, num_shards: int, num_buckets: int) -> None:
    """Tracking off: drop an older record, so that no training names a run of another version of the card."""
    storage.delete(layout.datacard_key(snapshot, num_shards, num_buckets, layout.DATACARD_MLFLOW_RUN))


def data_card_sha256(files: dict[str, bytes]) -> str:
    """Name and bytes of each file, sorted by name: the hash training/loop.py `files_sha256` gives the same files."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()


def metric_values(values: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested dicts as MLflow metrics, nested keys joined with '/' (funnel/curated_pairs)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= metric_values(value, f"{prefix}{key}/")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def curated_dataset(storage: Storage, snapshot: str, num_shards: int, num_buckets: int, sha: str) -> dict | None:
    """The curated set as an `mlflow.data` MetaDataset: the balanced folder's URI, the card digest and the schema of
    one bucket's parquet footer (nothing else is read)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource  # defined when mlflow.data loads
    from mlflow.exceptions import MlflowException
    from mlflow.types.schema import ColSpec, Schema

    folder = layout.curation_dir("balanced", snapshot, num_shards, num_buckets)
    if storage.is_local:
        source = LocalArtifactDatasetSource(Path(storage.path(folder)).as_uri())
    else:
        try:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": the first one is right
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(storage.uri(folder))
        except MlflowException:  # a filesystem MLflow has no dataset source for (memory://): no dataset
            return None
    with storage.open(layout.balanced_bucket_key(snapshot, num_shards, num_buckets, 0)) as f:
        columns = pl.read_parquet_schema(f)
    schema = Schema([ColSpec(_mlflow_type(dtype), name) for name, dtype in columns.items()])
    return MetaDataset(source, name=f"curated/{snapshot}", digest=sha[:DIGEST_CHARS], schema=schema).to_dict()


def _mlflow_type(dtype: pl.DataType) -> Any:
    from mlflow.types.schema import Array, DataType

    # mlflow's own polars inference refuses unsigned integers (pair_id is a UInt64): map them to long here.
    if dtype.is_integer():
        return DataType.long
    if dtype.is_float():
        return DataType.double
    if isinstance(dtype, pl.List | pl.Array):
        return Array(_mlflow_type(dtype.inner))
    if dtype == pl.Boolean:
        return DataType.boolean
    if dtype == pl.Binary:
        return DataType.binary
    return DataType.string


def dataset_input(dataset: dict, context: str):
    """An `mlflow.entities.DatasetInput` of a recorded dataset (training/tracking.py has the same for the training
    side: curation may not import training, and the training image does not ship curation)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    entity = Dataset(**{k: dataset.get(k) for k in ("name", "digest", "source_type", "source", "schema", "profile")})
    return DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, context)])
