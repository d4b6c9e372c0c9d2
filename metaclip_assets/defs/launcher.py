"""Launching: the `training_launcher` resource runs `python -m <module>` through Dagster Pipes, as a local subprocess
or as a Kubernetes pod (the pod spec comes from training/k8s_pod.py), and relays what the process reports. Training
and evaluation both launch here; the assets decide only what to run.
"""

import os
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from metaclip_assets.training import k8s_multinode, k8s_pod

TRAIN_MODULE = "metaclip_assets.training"
EVAL_MODULE = "metaclip_assets.evaluation"


class TrainingLauncher(dg.ConfigurableResource):
    """Where training runs. `mode: local` runs a subprocess on this machine (its GPU if it has one); `mode: k8s`
    submits a pod with `dagster_k8s.PipesK8sClient` (torchrun with one process per GPU when gpu_count > 1);
    `mode: k8s_multinode` submits `nodes` such pods as one JobSet or Indexed Job (multinode_pipes.py). Switching
    is a config change, not a code change."""

    mode: str = Field(
        default="local",
        description="'local' (PipesSubprocessClient), 'k8s' (one pod, PipesK8sClient) or 'k8s_multinode' "
        "(nodes x gpu_count GPUs, JobSet or Indexed Job)",
    )
    data_root: str | None = Field(
        default=None,
        description="Data root as the training process sees it. Default: curation_storage's data "
        "root (local mode) or data_mount_path (k8s mode).",
    )
    env: dict[str, str] = Field(default={}, description="Extra environment, e.g. MLFLOW_TRACKING_URI.")
    python_executable: str | None = Field(default=None, description="local mode: interpreter (default: this one)")
    local_processes: int = Field(
        default=1, description="local mode: training processes on this machine (torchrun, one per GPU); 1: plain"
    )
    # ---- k8s mode -----------------------------------------------------------------------------------------
    image: str = "ghcr.io/example/metaclip-train:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    namespace: str = "metaclip"
    service_account: str = "metaclip-trainer"
    gpu_count: int = Field(default=1, description="GPUs per pod (per node in k8s_multinode); >1 runs torchrun")
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
    # ---- k8s_multinode mode (the k8s settings above make each node's pod) ---------------------------------------
    nodes: int = Field(default=2, description="k8s_multinode: pods (nodes), each with gpu_count GPUs")
    multinode_engine: str = Field(
        default="jobset",
        description="k8s_multinode: 'jobset' (needs the JobSet controller, see k8s/README.md) or 'indexed_job' "
        "(plain Indexed Job + headless Service, no add-on)",
    )
    rendezvous_port: int = Field(default=29500, description="k8s_multinode: torchrun c10d rendezvous port on pod 0")
    rendezvous_timeout_s: int = Field(
        default=900, description="k8s_multinode: how long nodes wait for each other (scheduling, image pulls)"
    )
    ttl_seconds_after_finished: int = Field(
        default=3600, description="k8s_multinode: cluster-side cleanup if this run could not delete the job itself"
    )

    def training_data_root(self, curation_data_root: str) -> str:
        if self.data_root:
            return self.data_root
        if self.mode.startswith("k8s"):
            return self.data_mount_path
        return curation_data_root if "://" in curation_data_root else os.path.abspath(curation_data_root)

    def pod_spec(self, gpu: bool = True, container_name: str = "trainer") -> dict[str, Any]:
        """The base pod spec PipesK8sClient completes (name, env, command); see k8s_pod.pod_spec."""
        return k8s_pod.pod_spec(self, gpu=gpu, container_name=container_name)

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
            python = self.python_executable or sys.executable
            processes = self.local_processes if module == TRAIN_MODULE else 1
            command = k8s_pod.pod_command(module, processes)
            # this interpreter for `python` and for torchrun (`python -m torch.distributed.run`), whatever is on PATH
            command = (
                [python, *command[1:]] if processes <= 1 else [python, "-m", "torch.distributed.run", *command[1:]]
            )
            # The child inherits this environment (PipesSubprocessClient merges os.environ); `env` goes on top.
            return dg.PipesSubprocessClient().run(context=context, command=command, extras=extras, env=env)
        if self.mode == "k8s":
            from dagster_k8s import PipesK8sClient

            return PipesK8sClient(**self._cluster_access()).run(
                context=context,
                extras=extras,
                namespace=self.namespace,
                # one process per GPU for training; evaluation is one process
                command=k8s_pod.pod_command(module, self.gpu_count if gpu and module == TRAIN_MODULE else 1),
                env={"HOME": "/tmp", **env},
                base_pod_spec=self.pod_spec(
                    gpu=gpu, container_name="trainer" if component == "training" else "evaluator"
                ),
                base_pod_meta={"labels": {**self.pod_labels, "app.kubernetes.io/component": component}},
                pod_wait_timeout=self.pod_wait_timeout,
            )
        if self.mode == "k8s_multinode":
            return self._launch_multinode(context, extras, module, env, component)
        raise ValueError(f"TrainingLauncher.mode must be 'local', 'k8s' or 'k8s_multinode', got {self.mode!r}")

    def _cluster_access(self) -> dict[str, Any]:
        return {
            "load_incluster_config": self.load_incluster_config,
            "kubeconfig_file": self.kubeconfig_file,
            "poll_interval": self.poll_interval,
        }

    def _launch_multinode(
        self, context: dg.AssetExecutionContext, extras: dict[str, Any], module: str, env: dict, component: str
    ) -> dg.PipesClientCompletedInvocation:
        if module != TRAIN_MODULE:
            raise ValueError(f"k8s_multinode runs training only; run {module} with mode 'k8s' or 'local'")
        from metaclip_assets.defs.multinode_pipes import PipesK8sMultinodeClient

        # a DNS label short enough for JobSet's pod host names (<name>-node-0-<index>, 63 at most)
        name = f"metaclip-{context.run_id[:8]}-{uuid.uuid4().hex[:6]}"
        labels = {**self.pod_labels, "app.kubernetes.io/component": component}
        return PipesK8sMultinodeClient(**self._cluster_access()).run(
            context=context,
            extras=extras,
            render=lambda pipes_env: k8s_multinode.render(self, name, self.namespace, module, pipes_env, labels),
            env={"HOME": "/tmp", **env},
            wait_timeout=self.pod_wait_timeout,
        )

    def launch_and_relay(
        self,
        context: dg.AssetExecutionContext,
        config_key: str,
        config: dict[str, Any],
        module: str = TRAIN_MODULE,
        gpu: bool = True,
        component: str = "training",
        **extras: Any,
    ) -> Iterator:
        """`launch` with `config` as the extra `config_key` (plus `extras`), then the process's results with the
        launch details (mode, output dir, the config) added to its materialization."""
        invocation = self.launch(context, {config_key: config, **extras}, module=module, gpu=gpu, component=component)
        yield from relay_results(
            invocation,
            component,
            {
                "launcher": self.mode,
                "output_dir": dg.MetadataValue.path(config["output_dir"]),
                config_key: dg.MetadataValue.json(config),
            },
        )


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
