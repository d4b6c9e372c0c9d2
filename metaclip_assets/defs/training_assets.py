"""Training: a per-snapshot `clip_checkpoint` asset that runs `python -m metaclip_assets.training` through Dagster
Pipes, as a local subprocess or as a Kubernetes GPU pod, chosen by the `training_launcher` resource's config.

The asset only decides *what* to train (training/plan.py: paths, snapshot order, warm start, the run version); the
training process does the work and reports loss, throughput, checkpoint path and its MLflow run back over the Pipes
channel. A version that was trained already is not launched again: the asset reports it with the same data version.

Lineage T-1 -> T: the warm start is not an edge of the asset graph. Dagster 1.13 lets an asset depend on its own
partitions only through a TimeWindowPartitionMapping on time partitions; snapshots are dynamic partitions, a custom
"previous key" mapping is refused at definition time ("depends on itself") and a time-window mapping on them fails
when a run reads its inputs' data versions. So each materialization names its warm start instead: the T-1 snapshot,
its run version (hashed into T's, so a re-trained T-1 gives T a new version) and a link to the run that trained it.
"""

# No `from __future__ import annotations` here: dagster 1.13.27 does not resolve a string annotation on the
# `config` parameter ("'ClipTrainingConfig' cannot be resolved").
import dagster as dg
from pydantic import Field

from metaclip_assets.defs.launcher import TRAIN_MODULE, TrainingLauncher
from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME, snapshot_partitions
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.training import plan as training_plan
from metaclip_assets.training.__main__ import CHECK_LOSS_FINITE
from metaclip_assets.training.plan import ASSET_DEFAULTS as DEFAULTS


class TrainedModelChoice(dg.Config):
    """Which trained model an asset downstream of clip_checkpoint reads: model + experiment, as clip_checkpoint was
    configured (defaults: training/plan.py ASSET_DEFAULTS)."""

    model: str = DEFAULTS.model
    experiment: str = DEFAULTS.experiment


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


# What a run's record keeps of the process's materialization, to show again when the version is not re-trained.
RECORDED = ("checkpoint_path", "final_loss", "first_loss", "samples_seen", "steps", "samples_per_s", "device", "t")
RECORDED += ("strategy", "mlflow_run_id", "mlflow_run_url")
TYPED = {"checkpoint_path": dg.MetadataValue.path, "mlflow_run_url": dg.MetadataValue.url}
STATUS = {
    "train": "trained",
    "up_to_date": "up to date: neither the curated data, the training config nor the warm start changed",
    "repoint": "trained before: the pointer names this version again",
}


def lineage_metadata(plan: training_plan.TrainingPlan, data_root: str) -> dict:
    """The run version, what it hashes and the warm start it came from (snapshot, version, checkpoint, the Dagster
    run that trained it): the T-1 -> T lineage the asset graph cannot draw."""
    warm = plan.warm_start
    md = {
        "run_version": plan.version,
        "run_status": STATUS[plan.action],
        "up_to_date": plan.action != "train",
        "run_dir": dg.MetadataValue.path(plan.train_config["output_dir"]),
        "version_inputs": dg.MetadataValue.json(plan.inputs),
        "curated_data": dg.MetadataValue.json(plan.data),
        "warm_start_snapshot": warm.snapshot if warm else "none",
        "warm_start_version": warm.version if warm else "none",
    }
    if warm is not None:
        md["warm_start_checkpoint"] = dg.MetadataValue.path(f"{data_root.rstrip('/')}/{warm.key}")
        if warm.record.get("dagster_run_id"):
            md["warm_start_run"] = dg.MetadataValue.dagster_run(warm.record["dagster_run_id"])
    return md


def not_launched(plan: training_plan.TrainingPlan, lineage: dict, data_root: str):
    """The materialization and check of a version that was trained already, as its run recorded them (the
    checkpoint path as the training process sees it now, which another launcher mode may have changed)."""
    record = plan.done  # set whenever the plan is not to train
    reported = {k: TYPED.get(k, lambda v: v)(v) for k, v in record.get("reported", {}).items()}
    reported["checkpoint_path"] = dg.MetadataValue.path(f"{data_root.rstrip('/')}/{record['checkpoint']}")
    trained_by = record.get("dagster_run_id")
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(plan.version),
        metadata={
            **reported,
            **lineage,
            "launcher": "none (not launched)",
            **({"trained_by_run": dg.MetadataValue.dagster_run(trained_by)} if trained_by else {}),
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK_LOSS_FINITE,
        passed=bool(record.get("checks_passed")),
        description=f"as checked when run version {plan.version} was trained",
        metadata={"run_version": plan.version},
    )


@dg.asset(
    group_name="training",
    partitions_def=snapshot_partitions,
    deps=["webdataset_shards"],
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    code_version=training_plan.TRAINING_CODE_VERSION,
    description="A CLIP model (open_clip, OpenAI recipe) trained on this snapshot's curated shards, warm-started "
    "from the previous snapshot's checkpoint with TiC-CLIP replay; tracked in MLflow. Each run version (config, "
    "shards, warm start) trains once into its own folder; metadata names the warm start (previous snapshot, its "
    "version and run), which the graph cannot show as an edge for dynamic partitions.",
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
    storage = curation_storage.storage()
    data_root = training_launcher.training_data_root(curation_storage.data_root)
    plan = training_plan.plan_training(storage, config.model_dump(), snapshot, registered, data_root)
    lineage = lineage_metadata(plan, data_root)
    train_config = plan.train_config
    if plan.action != "train":
        if plan.action == "repoint":
            training_plan.publish(storage, plan.done)
        context.log.info(f"{config.model} on {snapshot}, run version {plan.version}: {STATUS[plan.action]}")
        yield from not_launched(plan, lineage, data_root)
        return
    context.log.info(
        f"training {config.model} on {snapshot} as run version {plan.version} "
        f"(t={len(train_config['earlier_snapshots'])}, {config.strategy}, "
        f"warm start {train_config['warm_start_from']}) via {training_launcher.mode}"
    )
    results = list(training_launcher.launch_and_relay(context, "train_config", train_config, TRAIN_MODULE))
    checks = [r for r in results if isinstance(r, dg.AssetCheckResult)]
    checks += [c for r in results if isinstance(r, dg.MaterializeResult) for c in r.check_results or []]
    passed = all(c.passed for c in checks)
    materialized = next(r for r in results if isinstance(r, dg.MaterializeResult))  # relay_results ensures one
    reported = {k: v.value for k, v in (materialized.metadata or {}).items() if k in RECORDED}
    if passed:  # only a run that passed its checks becomes what the next snapshot warm-starts from
        training_plan.publish(storage, training_plan.run_record(plan, reported, context.run_id, passed))
    else:
        context.log.warning(f"run version {plan.version} failed its checks: the pointer still names the previous run")
    for r in results:
        if isinstance(r, dg.MaterializeResult):
            r = dg.MaterializeResult(
                asset_key=r.asset_key,
                check_results=r.check_results,
                data_version=dg.DataVersion(plan.version),
                metadata={**(r.metadata or {}), **lineage},
            )
        yield r
