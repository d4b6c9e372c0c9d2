"""Training: a per-snapshot `clip_checkpoint` asset that runs `python -m metaclip_assets.training` through Dagster
Pipes, as a local subprocess or as a Kubernetes GPU pod, chosen by the `TrainingLauncher` resource's config.

The asset only decides *what* to train (paths, snapshot order, recipe); the training process does the work and
reports loss, throughput, checkpoint path and its MLflow run back over the Pipes channel.
"""

# No `from __future__ import annotations` here: dagster 1.13.27 does not resolve a string annotation on the
# `config` parameter ("'ClipTrainingConfig' cannot be resolved").
import os
import sys
from typing import Any

import dagster as dg
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME, snapshot_partitions
from metaclip_assets.defs.resources import CurationStorage

TRAIN_MODULE = "metaclip_assets.training"


class TrainingLauncher(dg.ConfigurableResource):
    """Where training runs. `mode: local` runs a subprocess on this machine (its GPU if it has one); `mode: k8s`
    submits a pod with `dagster_k8s.PipesK8sClient`. Switching is a config change, not a code change."""

    mode: str = Field(default="local", description="'local' (PipesSubprocessClient) or 'k8s' (PipesK8sClient)")
    data_root: str | None = Field(
        default=None,
        description="Data root as the training process sees it. Default: curation_storage's data "
        "root (local mode) or data_mount_path (k8s mode).",
    )
    env: dict[str, str] = Field(default={}, description="Extra environment, e.g. MLFLOW_TRACKING_URI.")
    python_executable: str | None = Field(default=None, description="local mode: interpreter (default: this one)")
    # ---- k8s mode -----------------------------------------------------------------------------------------
    image: str = "ghcr.io/example/metaclip-train:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    namespace: str = "metaclip"
    service_account: str = "metaclip-trainer"
    gpu_count: int = 1
    cpu_request: str = "8"
    cpu_limit: str = "16"
    memory_request: str = "64Gi"
    memory_limit: str = "64Gi"
    node_selector: dict[str, str] = Field(default={"nvidia.com/gpu.present": "true"})
    tolerations: list[dict[str, str]] = Field(
        default=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    pvc_claim_name: str | None = Field(
        default="metaclip-data",
        description="shared volume with shards and checkpoints; None when data_root is an object store URL",
    )
    data_mount_path: str = "/data"
    shm_size: str = "16Gi"
    env_from_secrets: list[str] = Field(default=[], description="Secrets exposed as env (MLflow, object store)")
    run_as_user: int = 1000
    termination_grace_period_s: int = Field(
        default=300, description="time to finish the step and write a checkpoint after SIGTERM (eviction, preemption)"
    )
    pod_labels: dict[str, str] = Field(default={"app.kubernetes.io/name": "metaclip-train"})
    load_incluster_config: bool | None = None
    kubeconfig_file: str | None = None
    poll_interval: float = 10.0
    pod_wait_timeout: float = Field(default=0, description="seconds; 0 waits forever (training can take days)")

    def training_data_root(self, curation_data_root: str) -> str:
        if self.data_root:
            return self.data_root
        if self.mode == "k8s":
            return self.data_mount_path
        return curation_data_root if "://" in curation_data_root else os.path.abspath(curation_data_root)

    def pod_spec(self, gpu: bool = True, container_name: str = "trainer") -> dict[str, Any]:
        """The base pod spec PipesK8sClient completes (name, env, command): GPU limits, scheduling, non-root.
        Without `gpu` the GPU limit, GPU node selector and GPU tolerations are left out (CPU work, e.g. eval)."""
        limits = {"cpu": self.cpu_limit, "memory": self.memory_limit}
        if gpu and self.gpu_count > 0:
            limits["nvidia.com/gpu"] = str(self.gpu_count)
        mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
        volumes: list[dict[str, Any]] = [
            # DataLoader workers pass batches through shared memory; the container default (64 MiB) is too small.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": self.shm_size}},
            {"name": "tmp", "emptyDir": {}},
        ]
        if self.pvc_claim_name:
            mounts.append({"name": "data", "mountPath": self.data_mount_path})
            volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": self.pvc_claim_name}})
        container: dict[str, Any] = {
            "name": container_name,
            "image": self.image,
            "imagePullPolicy": self.image_pull_policy,
            "resources": {"requests": {"cpu": self.cpu_request, "memory": self.memory_request}, "limits": limits},
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        if self.env_from_secrets:
            container["envFrom"] = [{"secretRef": {"name": s}} for s in self.env_from_secrets]
        spec: dict[str, Any] = {
            "serviceAccountName": self.service_account,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": self.termination_grace_period_s,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": self.run_as_user,
                "runAsGroup": self.run_as_user,
                "fsGroup": self.run_as_user,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": volumes,
        }

        def keep(key: str) -> bool:
            return gpu or not key.startswith("nvidia.com/")

        node_selector = {k: v for k, v in self.node_selector.items() if keep(k)}
        tolerations = [dict(t) for t in self.tolerations if keep(t.get("key", ""))]
        if node_selector:
            spec["nodeSelector"] = node_selector
        if tolerations:
            spec["tolerations"] = tolerations
        return spec

    def launch(
        self,
        context: dg.AssetExecutionContext,
        extras: dict[str, Any],
        module: str = TRAIN_MODULE,
        gpu: bool = True,
        component: str = "training",
    ) -> dg.PipesClientCompletedInvocation:
        """Run `python -m <module>` under Pipes, locally or as a pod; evaluation reuses this with its module."""
        # Unbuffered, so progress lines and Pipes messages reach the run log as they happen; HOME on the
        # writable /tmp because the pod's root filesystem is read-only.
        env = {"PYTHONUNBUFFERED": "1", **self.env}
        if self.mode == "local":
            command = [self.python_executable or sys.executable, "-m", module]
            # The child inherits this environment (PipesSubprocessClient merges os.environ); `env` goes on top.
            return dg.PipesSubprocessClient().run(context=context, command=command, extras=extras, env=env)
        if self.mode == "k8s":
            from dagster_k8s import PipesK8sClient

            client = PipesK8sClient(
                load_incluster_config=self.load_incluster_config,
                kubeconfig_file=self.kubeconfig_file,
                poll_interval=self.poll_interval,
            )
            return client.run(
                context=context,
                extras=extras,
                namespace=self.namespace,
                command=["python", "-m", module],
                env={"HOME": "/tmp", **env},
                base_pod_spec=self.pod_spec(
                    gpu=gpu, container_name="trainer" if component == "training" else "evaluator"
                ),
                base_pod_meta={"labels": {**self.pod_labels, "app.kubernetes.io/component": component}},
                pod_wait_timeout=self.pod_wait_timeout,
            )
        raise ValueError(f"TrainingLauncher.mode must be 'local' or 'k8s', got {self.mode!r}")


def relay_results(invocation: dg.PipesClientCompletedInvocation, component: str, metadata: dict[str, Any]):
    """The Pipes process's results, its materialization with `metadata` added (the launch details shown in the
    UI). A process that reported no materialization failed silently: an error, not an empty step."""
    results = invocation.get_results(implicit_materializations=False)
    if not any(isinstance(r, dg.MaterializeResult) for r in results):
        raise RuntimeError(f"the {component} process exited without reporting a materialization")
    for r in results:
        if isinstance(r, dg.MaterializeResult):
            yield dg.MaterializeResult(
                asset_key=r.asset_key,
                check_results=r.check_results,
                data_version=r.data_version,
                metadata={**(r.metadata or {}), **metadata},
            )
        else:
            yield r


class ClipTrainingConfig(dg.Config):
    """The recipe; defaults are OpenAI's / MetaCLIP's except the model and budget, which suit the CPU sample."""

    model: str = Field(
        default="tiny-clip",
        description="ViT-B-32-quickgelu, ViT-B-16-quickgelu, ViT-L-14-quickgelu, or tiny-clip (CPU, seconds)",
    )
    batch_size: int = 64
    samples_budget: int = Field(default=6_400, description="training budget in samples seen")
    lr: float | None = Field(default=None, description="None: 5e-4 (B sizes), 4e-4 (L and larger)")
    warmup_steps: int | None = Field(default=None, description="None: min(2000, 10% of steps); 0 if warm-started")
    weight_decay: float = 0.2
    precision: str = Field(default="auto", description="auto (amp on GPU, fp32 on CPU), amp, amp_bf16, fp32")
    strategy: str = Field(
        default="cumulative", description="TiC-CLIP: cumulative, restricted, sequential, from_scratch"
    )
    replay_ratio: float | None = Field(default=0.5, description="share of replayed (older) samples per batch")
    replay_buffer_samples: int = Field(default=10_000, description="restricted: replay buffer size in samples")
    workers: int = 0
    threads: int | None = None
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    experiment: str = Field(default="metaclip", description="MLflow experiment (one per pipeline)")
    mlflow_ui_url: str | None = Field(default=None, description="UI base for run links of a sqlite store")
    shard_root: str | None = Field(default=None, description="default: <data_root>/shards")
    log_checkpoint_artifact: bool = False


def build_train_config(config: ClipTrainingConfig, snapshot: str, registered: list[str], data_root: str) -> dict:
    """The training process's config: paths as it sees them, the snapshots before this one, the warm start."""
    earlier = sorted(s for s in registered if s < snapshot)  # snapshot ids sort in time order (CC-MAIN-YYYY-WW)
    runs_root = f"{data_root.rstrip('/')}/training/{config.experiment}/{config.model}"
    warm = f"{runs_root}/{earlier[-1]}/final.pt" if earlier and config.strategy != "from_scratch" else None
    card_dir = f"{data_root.rstrip('/')}/{layout.datacard_dir(snapshot)}"
    return {
        **{k: v for k, v in config.model_dump().items() if k != "shard_root"},
        "snapshot": snapshot,
        "earlier_snapshots": earlier,
        "shard_root": config.shard_root or f"{data_root.rstrip('/')}/shards",
        "output_dir": f"{runs_root}/{snapshot}",
        "warm_start_from": warm,
        "data_root": data_root,
        "data_card_paths": [f"{card_dir}/datacard.json", f"{card_dir}/summary.json"],
    }


@dg.asset(
    group_name="training",
    partitions_def=snapshot_partitions,
    deps=["webdataset_shards"],
    kinds={"pytorch", "mlflow"},
    pool="gpu",
    description="A CLIP model (open_clip, OpenAI recipe) trained on this snapshot's curated shards, warm-started "
    "from the previous snapshot's checkpoint with TiC-CLIP replay; tracked in MLflow.",
    check_specs=[
        dg.AssetCheckSpec("loss_finite", asset="clip_checkpoint", description="Every training step's loss was finite.")
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
    train_config = build_train_config(config, snapshot, registered, data_root)
    context.log.info(
        f"training {config.model} on {snapshot} (t={len(train_config['earlier_snapshots'])}, "
        f"{config.strategy}, warm start {train_config['warm_start_from']}) via {training_launcher.mode}"
    )
    invocation = training_launcher.launch(context, extras={"train_config": train_config})
    yield from relay_results(
        invocation,
        "training",
        {
            "launcher": training_launcher.mode,
            "output_dir": dg.MetadataValue.path(train_config["output_dir"]),
            "train_config": dg.MetadataValue.json(train_config),
        },
    )
