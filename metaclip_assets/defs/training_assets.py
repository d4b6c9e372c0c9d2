"""Training: a per-snapshot `clip_checkpoint` asset that runs `python -m metaclip_assets.training` through Dagster
Pipes, as a local subprocess or as a Kubernetes GPU pod, chosen by the `training_launcher` resource's config.

The asset only decides *what* to train (training/plan.py: paths, snapshot order, warm start); the training process
does the work and reports loss, throughput, checkpoint path and its MLflow run back over the Pipes channel.
"""

# No `from __future__ import annotations` here: dagster 1.13.27 does not resolve a string annotation on the
# `config` parameter ("'ClipTrainingConfig' cannot be resolved").
import dagster as dg
from pydantic import Field

from metaclip_assets.defs.launcher import TRAIN_MODULE, TrainingLauncher
from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME, snapshot_partitions
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.training.__main__ import CHECK_LOSS_FINITE
from metaclip_assets.training.plan import ASSET_DEFAULTS as DEFAULTS
from metaclip_assets.training.plan import train_config_for


class ClipTrainingConfig(dg.Config):
    """The recipe (training/plan.py ASSET_DEFAULTS: OpenAI's / MetaCLIP's, with a budget for the CPU sample)."""

    model: str = Field(
        default=DEFAULTS.model,
        description="ViT-B-32-quickgelu, ViT-B-16-quickgelu, ViT-L-14-quickgelu, or tiny-clip (CPU, seconds)",
    )
    batch_size: int = DEFAULTS.batch_size
    samples_budget: int = Field(default=DEFAULTS.samples_budget, description="training budget in samples seen")
    lr: float | None = Field(default=DEFAULTS.lr, description="None: 5e-4 (B sizes), 4e-4 (L and larger)")
    warmup_steps: int | None = Field(
        default=DEFAULTS.warmup_steps, description="None: min(2000, 10% of steps); 0 if warm-started"
    )
    weight_decay: float = DEFAULTS.weight_decay
    precision: str = Field(
        default=DEFAULTS.precision, description="auto (amp on GPU, fp32 on CPU), amp, amp_bf16, fp32"
    )
    strategy: str = Field(
        default=DEFAULTS.strategy, description="TiC-CLIP: cumulative, restricted, sequential, from_scratch"
    )
    replay_ratio: float | None = Field(
        default=DEFAULTS.replay_ratio, description="share of replayed (older) samples per batch"
    )
    replay_buffer_samples: int = Field(
        default=DEFAULTS.replay_buffer_samples, description="restricted: replay buffer size in samples"
    )
    workers: int = DEFAULTS.workers
    threads: int | None = DEFAULTS.threads
    seed: int = DEFAULTS.seed
    checkpoint_every: int = DEFAULTS.checkpoint_every
    log_every: int = DEFAULTS.log_every
    experiment: str = Field(default=DEFAULTS.experiment, description="MLflow experiment (one per pipeline)")
    mlflow_ui_url: str | None = Field(
        default=DEFAULTS.mlflow_ui_url, description="UI base for run links of a sqlite store"
    )
    shard_root: str | None = Field(default=DEFAULTS.shard_root, description="default: <data_root>/shards")
    log_checkpoint_artifact: bool = DEFAULTS.log_checkpoint_artifact


@dg.asset(
    group_name="training",
    partitions_def=snapshot_partitions,
    deps=["webdataset_shards"],
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    description="A CLIP model (open_clip, OpenAI recipe) trained on this snapshot's curated shards, warm-started "
    "from the previous snapshot's checkpoint with TiC-CLIP replay; tracked in MLflow.",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_LOSS_FINITE, asset="clip_checkpoint", description="Every training step's loss was finite."
        )
    ],
)
def clip_checkpoint(
    context: dg.AssetExecutionContext,
    config: ClipTrainingConfig,
    training_launcher: TrainingLauncher,
    curation_storage: CurationStorage,
):
    snapshot = context.partition_key
    registered = context.instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME)
    data_root = training_launcher.training_data_root(curation_storage.data_root)
    train_config = train_config_for(config.model_dump(), snapshot, registered, data_root)
    context.log.info(
        f"training {config.model} on {snapshot} (t={len(train_config['earlier_snapshots'])}, "
        f"{config.strategy}, warm start {train_config['warm_start_from']}) via {training_launcher.mode}"
    )
    yield from training_launcher.launch_and_relay(context, "train_config", train_config, TRAIN_MODULE)
