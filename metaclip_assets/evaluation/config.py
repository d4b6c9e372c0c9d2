"""The evaluation config: one JSON-serialisable dataclass, shared by the entry point, the asset and the tests.

No torch here: the Dagster code location reads these defaults without loading the model stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

HELDOUT = "heldout"  # the zero-shot set made of the snapshot's own held-out split


@dataclass
class EvalConfig:
    checkpoint: str
    snapshot: str = "snapshot"
    output_dir: str | None = None  # metrics.json, matrix.json, matrix.png, eval_config.json
    cache_dir: str | None = None  # None: <output_dir>/../cache
    # Zero-shot sets: {name, path, format: folder|wds, classnames, classnames_key, templates, templates_key,
    # max_per_class, label_space, optional}; an `optional` set whose path is missing is skipped (a snapshot
    # without a split).
    zeroshot: list[dict] = field(default_factory=list)
    # Retrieval sets: {name, path, format: jsonl|coco, image_dir, max_images}.
    retrieval: list[dict] = field(default_factory=list)
    # TiC-CLIP: snapshot -> checkpoint and snapshot -> held-out image folder, snapshots up to `snapshot`.
    # Missing files are left out (a snapshot not trained yet); both feed the matrix and `no_regression`.
    checkpoints: dict[str, str] = field(default_factory=dict)
    eval_sets: dict[str, str] = field(default_factory=dict)
    time_matrix: bool = True
    matrix_metric: str = "top1"
    regression_dataset: str | None = HELDOUT  # None: no comparison (the check then says so)
    regression_metric: str = "top1"
    regression_margin: float = 0.05  # largest allowed drop (absolute, e.g. 0.05 = 5 points)
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"  # CPU by default; "auto" or "cuda" on a GPU node
    threads: int | None = None
    # MLflow: None -> $MLFLOW_TRACKING_URI, else sqlite under data_root, else the store the training used;
    # "none" disables. The metrics go into the training run (given, or found by its checkpoint_path tag) unless
    # separate_run; else into an eval run tagged with (and nested under) the training run.
    tracking_uri: str | None = None
    data_root: str | None = None
    experiment: str | None = None
    training_run_id: str | None = None
    separate_run: bool = False
    mlflow_ui_url: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:  # a typo must not silently fall back to a default
            raise ValueError(f"unknown evaluation config keys: {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
