"""Evaluation: a per-snapshot `eval_metrics` asset that runs `python -m metaclip_assets.evaluation` through the
same Pipes launch path as training (the `training_launcher` resource: local subprocess or Kubernetes pod), on CPU
unless configured otherwise.

The asset decides *what* to evaluate (this snapshot's checkpoint, its held-out split, the extra sets, every
checkpoint and split up to this snapshot for the TiC-CLIP matrix); the process does the work, logs to MLflow and
reports the numbers, a Markdown report with the heat map and both checks back over the Pipes channel.
"""

# No `from __future__ import annotations`: dagster 1.13.27 does not resolve string annotations on `config`.
import os
from typing import Any

import dagster as dg
from pydantic import Field

from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME, snapshot_partitions
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.training_assets import (
    ClipTrainingConfig,
    TrainingLauncher,
    build_train_config,
    relay_results,
)

EVAL_MODULE = "metaclip_assets.evaluation"
CHECK_FINITE = "metrics_finite_and_in_range"  # same names as metaclip_assets.evaluation.__main__ reports
CHECK_REGRESSION = "no_regression"
HELDOUT = "heldout"


class ZeroShotSetConfig(dg.Config):
    name: str
    path: str = Field(
        description="image folder (<class>/<image>) or webdataset dir/pattern; '{data_root}' is "
        "replaced by the data root the evaluation process sees"
    )
    format: str = Field(default="folder", description="'folder' or 'wds' (samples with a 'cls' field)")
    classnames: str | None = Field(
        default=None,
        description="JSON/txt file, or 'openai_imagenet'; default: classnames.json in the set, else folder names",
    )
    classnames_key: str | None = None
    templates: str | None = Field(
        default=None,
        description="JSON/txt file, or 'openai_imagenet'; default: "
        "templates.json in the set, else OpenAI's 80 ImageNet templates",
    )
    templates_key: str | None = None
    max_per_class: int | None = None


class RetrievalSetConfig(dg.Config):
    name: str
    path: str = Field(description="JSON lines {image, captions} or COCO captions_*.json; '{data_root}' allowed")
    format: str = Field(default="jsonl", description="'jsonl' or 'coco'")
    image_dir: str | None = None
    max_images: int | None = None


class EvalMetricsConfig(dg.Config):
    """Which checkpoint (model + experiment, as clip_checkpoint was configured) and what to measure."""

    model: str = "tiny-clip"
    experiment: str = "metaclip"
    heldout: bool = Field(default=True, description="zero-shot on the snapshot's own split <data_root>/eval/<s>/")
    zeroshot: list[ZeroShotSetConfig] = Field(default=[], description="extra zero-shot sets")
    retrieval: list[RetrievalSetConfig] = Field(default=[], description="retrieval sets")
    time_matrix: bool = Field(default=True, description="TiC-CLIP matrix over every snapshot up to this one")
    matrix_metric: str = "top1"
    regression_dataset: str | None = Field(default=HELDOUT, description="zero-shot set no_regression compares on")
    regression_metric: str = "top1"
    regression_margin: float = Field(
        default=0.05, description="largest allowed drop vs the previous snapshot's model (absolute: 0.05 = 5 points)"
    )
    regression_severity: str = Field(default="WARN", description="'WARN' or 'ERROR' when no_regression fails")
    device: str = Field(default="cpu", description="cpu, auto or cuda")
    gpu_pod: bool = Field(default=False, description="k8s mode: request the launcher's GPU (else a CPU pod)")
    batch_size: int = 64
    workers: int = 0
    threads: int | None = None
    separate_mlflow_run: bool = Field(default=False, description="log to a linked eval run instead of the training run")
    mlflow_ui_url: str | None = None


def checkpoint_path(config: EvalMetricsConfig, snapshot: str, registered: list[str], data_root: str) -> str:
    """Where clip_checkpoint writes this snapshot's final.pt (the training asset's own path rule, reused)."""
    from metaclip_assets.training.checkpoint import FINAL

    train = build_train_config(
        ClipTrainingConfig(model=config.model, experiment=config.experiment), snapshot, registered, data_root
    )
    return f"{train['output_dir']}/{FINAL}"


def build_eval_config(
    config: EvalMetricsConfig, snapshot: str, registered: list[str], data_root: str, training_run_id: str | None = None
) -> dict[str, Any]:
    """The evaluation process's config, with paths as it sees them. Files that do not exist (snapshots not
    trained yet, no held-out split) are left out by the process, which is the side that can see them."""
    root = data_root.rstrip("/")
    upto = sorted(s for s in registered if s <= snapshot)  # snapshot ids sort in time order
    if snapshot not in upto:
        upto.append(snapshot)
    checkpoints = {s: checkpoint_path(config, s, registered, data_root) for s in upto}
    eval_sets = {s: f"{root}/eval/{s}" for s in upto}

    def sub(path: str | None) -> str | None:
        return path.replace("{data_root}", root) if path else path

    zeroshot = [{"name": HELDOUT, "path": eval_sets[snapshot], "optional": True}] if config.heldout else []
    for z in config.zeroshot:
        zeroshot.append(
            {**z.model_dump(), "path": sub(z.path), "classnames": sub(z.classnames), "templates": sub(z.templates)}
        )
    retrieval = [{**r.model_dump(), "path": sub(r.path), "image_dir": sub(r.image_dir)} for r in config.retrieval]
    out_root = f"{root}/evaluation/{config.experiment}/{config.model}"
    return {
        "checkpoint": checkpoints[snapshot],
        "snapshot": snapshot,
        "output_dir": f"{out_root}/{snapshot}",
        "cache_dir": f"{out_root}/cache",
        "zeroshot": zeroshot,
        "retrieval": retrieval,
        "checkpoints": checkpoints,
        "eval_sets": eval_sets if config.time_matrix else {},
        "time_matrix": config.time_matrix,
        "matrix_metric": config.matrix_metric,
        "regression_dataset": config.regression_dataset,
        "regression_metric": config.regression_metric,
        "regression_margin": config.regression_margin,
        "batch_size": config.batch_size,
        "workers": config.workers,
        "device": config.device,
        "threads": config.threads,
        "data_root": root,
        "experiment": config.experiment,
        "training_run_id": training_run_id,
        "separate_run": config.separate_mlflow_run,
        "mlflow_ui_url": config.mlflow_ui_url,
    }


def training_run_of(instance: dg.DagsterInstance, snapshot: str, expected_checkpoint: str) -> str | None:
    """The MLflow run id clip_checkpoint reported for this partition, if that materialization wrote the checkpoint
    we evaluate (else the process finds the run by its checkpoint_path tag)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("clip_checkpoint"), asset_partitions=[snapshot]), limit=1
    ).records
    if not records:
        return None
    md = records[0].asset_materialization.metadata
    path, run = md.get("checkpoint_path"), md.get("mlflow_run_id")
    if path is None or run is None or os.path.normpath(str(path.value)) != os.path.normpath(expected_checkpoint):
        return None
    return str(run.value)


@dg.asset(
    group_name="evaluation",
    partitions_def=snapshot_partitions,
    deps=["clip_checkpoint"],
    kinds={"pytorch", "mlflow"},
    description="Zero-shot classification (held-out split + configured sets), retrieval R@k and the TiC-CLIP "
    "per-time-period matrix of this snapshot's checkpoint; logged to its MLflow training run.",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_FINITE,
            asset="eval_metrics",
            description="Every metric is finite and in [0, 1]; no embedding is NaN/inf; no set empty.",
        ),
        dg.AssetCheckSpec(
            CHECK_REGRESSION,
            asset="eval_metrics",
            description="The regression set's metric did not drop by more than the margin against "
            "the previous snapshot's model (passes for the first snapshot, saying so).",
        ),
    ],
)
def eval_metrics(
    context: dg.AssetExecutionContext,
    config: EvalMetricsConfig,
    training_launcher: TrainingLauncher,
    curation_storage: CurationStorage,
):
    if config.regression_severity not in ("WARN", "ERROR"):
        raise ValueError(f"regression_severity must be 'WARN' or 'ERROR', got {config.regression_severity!r}")
    snapshot = context.partition_key
    registered = context.instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME)
    data_root = training_launcher.training_data_root(curation_storage.data_root)
    ckpt = checkpoint_path(config, snapshot, registered, data_root)
    eval_config = build_eval_config(
        config, snapshot, registered, data_root, training_run_of(context.instance, snapshot, ckpt)
    )
    context.log.info(
        f"evaluating {ckpt} ({len(eval_config['zeroshot'])} zero-shot, "
        f"{len(eval_config['retrieval'])} retrieval sets, matrix over "
        f"{len(eval_config['eval_sets'])} snapshots) via {training_launcher.mode} on {config.device}"
    )
    invocation = training_launcher.launch(
        context,
        {"eval_config": eval_config, "regression_severity": config.regression_severity},
        module=EVAL_MODULE,
        gpu=config.gpu_pod,
        component="evaluation",
    )
    yield from relay_results(
        invocation,
        "evaluation",
        {
            "launcher": training_launcher.mode,
            "output_dir": dg.MetadataValue.path(eval_config["output_dir"]),
            "eval_config": dg.MetadataValue.json(eval_config),
        },
    )


eval_assets = [eval_metrics]
