"""MLflow tracking through an explicit `MlflowClient(tracking_uri=...)`: no global mlflow state, so several
trainings (or tests) in one process never share an active run. One experiment per pipeline, one run per
(snapshot, model config); a resumed training continues its run (the run id is kept in the output dir).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from metaclip_assets import layout

RUN_FILE = "mlflow_run.json"
MAX_PARAM_CHARS = 500  # long values (shard lists) are cut here; the full config is an artifact


def sqlite_store_uri(data_root: str) -> str:
    """The default MLflow store of a data root, for training and evaluation alike."""
    return f"sqlite:///{os.path.abspath(data_root)}/{layout.MLFLOW_DB}"


def sqlite_artifact_root(uri: str) -> str | None:
    """sqlite:////abs/mlflow.db -> file:///abs/artifacts (MLflow would otherwise use ./mlruns in the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent / "artifacts").resolve().as_uri()


class Tracker:
    def __init__(self, uri: str, experiment: str, ui_url: str | None = None):
        from mlflow import MlflowClient  # imported here: standalone runs with tracking "none" skip the cost

        self.uri, self.experiment = uri, experiment
        artifact_root = sqlite_artifact_root(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.ui_url = uri if urlparse(uri).scheme in ("http", "https") else ui_url or "http://127.0.0.1:5000"
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                location = f"{artifact_root}/{experiment}" if artifact_root else None
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # created concurrently by another training: use that one
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id
        self.run_id: str | None = None
        self.resumed = False

    def start(self, output_dir: str, run_name: str, tags: dict[str, str]) -> str:
        """Continue the run recorded in output_dir (same tracking store) or create one."""
        record = Path(output_dir) / RUN_FILE
        if record.exists():
            saved = json.loads(record.read_text())
            if saved.get("tracking_uri") == self.uri:
                try:
                    self.client.get_run(saved["run_id"])
                    self.run_id, self.resumed = saved["run_id"], True
                    self.client.update_run(self.run_id, status="RUNNING")
                except Exception:
                    self.run_id = None
        if self.run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            record.parent.mkdir(parents=True, exist_ok=True)
            tmp = record.with_name(f".{RUN_FILE}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({"tracking_uri": self.uri, "run_id": self.run_id}))
            os.replace(tmp, record)
        return self.run_id

    def forget(self, output_dir: str) -> None:
        """After a finished training: the next training in this dir is a new run."""
        (Path(output_dir) / RUN_FILE).unlink(missing_ok=True)

    @property
    def run_url(self) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        # Params are immutable in MLflow: a resumed run logs only the ones it does not have yet.
        existing = self.client.get_run(self.run_id).data.params if self.resumed else {}
        items = [Param(k, _param_str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for step, values in rows for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _param_str(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


# The curation run a training used (written by curation/tracking.py beside the data card); read here because the
# training image ships this package, not curation.
CONTEXT_TAG = "mlflow.data.context"  # what mlflow.log_input(context=...) sets


def dataset_input(dataset: dict, context: str):
    """An `mlflow.entities.DatasetInput` of a recorded dataset, for `MlflowClient.log_inputs`."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    entity = Dataset(**{k: dataset.get(k) for k in ("name", "digest", "source_type", "source", "schema", "profile")})
    return DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, context)])


def read_run_record(data_card_paths: list[str], data_card_sha: str | None) -> dict | None:
    """The curation run recorded next to a training's data card files (filesystem paths as the training process
    sees them); None without a record, or when the card changed after the run was logged (another card version)."""
    if not data_card_paths or data_card_sha is None:
        return None
    path = os.path.join(os.path.dirname(data_card_paths[0]), layout.DATACARD_MLFLOW_RUN)
    if not os.path.isfile(path):
        return None
    record = json.loads(Path(path).read_text())
    return record if record.get("data_card_sha256") == data_card_sha else None
