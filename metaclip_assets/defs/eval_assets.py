"""Evaluation: a per-snapshot `eval_metrics` asset that runs `python -m metaclip_assets.evaluation` through the
same Pipes launch path as training (the `training_launcher` resource: local subprocess or Kubernetes pod), on CPU
unless configured otherwise.

The asset decides *what* to evaluate (evaluation/plan.py: this snapshot's checkpoint, its held-out split, the extra
sets, every checkpoint and split up to this snapshot for the TiC-CLIP matrix); the process does the work, logs to MLflow and
reports the numbers, a Markdown report with the heat map and both checks back over the Pipes channel.
"""

# No `from __future__ import annotations`: dagster 1.13.27 does not resolve string annotations on `config`.
import os

import dagster as dg
from pydantic import Field

from metaclip_assets.defs.launcher import EVAL_MODULE, TrainingLauncher
from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME, snapshot_partitions
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.training_assets import TrainedModelChoice
from metaclip_assets.evaluation import datasets
from metaclip_assets.evaluation.__main__ import CHECK_FINITE, CHECK_REGRESSION, REGRESSION_SEVERITY
from metaclip_assets.evaluation.config import EvalConfig
from metaclip_assets.evaluation.plan import eval_config_for
from metaclip_assets.training.plan import earlier_snapshots, require_checkpoint, resolve_checkpoints


class ZeroShotSetConfig(dg.Config):
    name: str
    path: str = Field(
        description="image folder (<class>/<image>) or webdataset dir/pattern; '{data_root}' is "
        "replaced by the data root the evaluation process sees"
    )
    format: str = Field(default=datasets.ZEROSHOT_FORMAT, description="'folder' or 'wds' (samples with a 'cls' field)")
    classnames: str | None = Field(
        default=None,
        description="JSON/txt file, or 'openai_imagenet'; default: classnames.json in the set, else ImageNet-1k "
        "names for wnid folders (n01440764, ...), else folder names",
    )
    classnames_key: str | None = None
    templates: str | None = Field(
        default=None,
        description="JSON/txt file, or 'openai_imagenet'; default: "
        "templates.json in the set, else OpenAI's 80 ImageNet templates",
    )
    templates_key: str | None = None
    max_per_class: int | None = None
    label_space: str | None = Field(
        default=None,
        description="'present' (the folders there) or 'full' (the whole class list); default: full when class "
        "names are given, else present",
    )


class RetrievalSetConfig(dg.Config):
    name: str
    path: str = Field(description="JSON lines {image, captions} or COCO captions_*.json; '{data_root}' allowed")
    format: str = Field(default=datasets.RETRIEVAL_FORMAT, description="'jsonl' or 'coco'")
    image_dir: str | None = None
    max_images: int | None = None


class EvalMetricsConfig(TrainedModelChoice):
    """Which checkpoint (model + experiment, as clip_checkpoint was configured) and what to measure; defaults from
    the training asset's and EvalConfig's."""

    heldout: bool = Field(default=True, description="zero-shot on the snapshot's own split <data_root>/eval/<s>/")
    zeroshot: list[ZeroShotSetConfig] = Field(default=[], description="extra zero-shot sets")
    retrieval: list[RetrievalSetConfig] = Field(default=[], description="retrieval sets")
    time_matrix: bool = Field(
        default=EvalConfig.time_matrix, description="TiC-CLIP matrix over every snapshot up to this one"
    )
    matrix_metric: str = EvalConfig.matrix_metric
    regression_dataset: str | None = Field(
        default=EvalConfig.regression_dataset, description="zero-shot set no_regression compares on"
    )
    regression_metric: str = EvalConfig.regression_metric
    regression_margin: float = Field(
        default=EvalConfig.regression_margin,
        description="largest allowed drop vs the previous snapshot's model (absolute: 0.05 = 5 points)",
    )
    regression_severity: str = Field(
        default=REGRESSION_SEVERITY, description="'WARN' or 'ERROR' when no_regression fails"
    )
    device: str = Field(default=EvalConfig.device, description="cpu, auto or cuda")
    gpu_pod: bool = Field(default=False, description="k8s mode: request the launcher's GPU (else a CPU pod)")
    batch_size: int = EvalConfig.batch_size
    workers: int = EvalConfig.workers
    threads: int | None = EvalConfig.threads
    separate_mlflow_run: bool = Field(
        default=EvalConfig.separate_run, description="log to a linked eval run instead of the training run"
    )
    mlflow_ui_url: str | None = EvalConfig.mlflow_ui_url


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
    # Every checkpoint through its snapshot's training pointer (the current run version), this snapshot's required.
    storage = curation_storage.storage()
    current = require_checkpoint(storage, config.experiment, config.model, snapshot)
    keys = resolve_checkpoints(storage, config.experiment, config.model, earlier_snapshots(snapshot, registered))
    keys[snapshot] = current.key
    ckpt = f"{data_root.rstrip('/')}/{current.key}"
    # The MLflow run: the materialization's if it wrote this checkpoint, else the one the pointer's run recorded.
    reported = current.record.get("reported", {})
    run_id = training_run_of(context.instance, snapshot, ckpt) or reported.get("mlflow_run_id")
    eval_config = eval_config_for(config.model_dump(), snapshot, registered, data_root, run_id, keys)
    context.log.info(
        f"evaluating {ckpt} (run version {current.version}; {len(eval_config['zeroshot'])} zero-shot, "
        f"{len(eval_config['retrieval'])} retrieval sets, matrix over "
        f"{len(eval_config['eval_sets'])} snapshots) via {training_launcher.mode} on {config.device}"
    )
    yield from training_launcher.launch_and_relay(
        context,
        "eval_config",
        eval_config,
        module=EVAL_MODULE,
        gpu=config.gpu_pod,
        component="evaluation",
        regression_severity=config.regression_severity,
    )


eval_assets = [eval_metrics]
