"""Launching: the `training_launcher` resource runs `python -m <module>` through Dagster Pipes, as a local subprocess
or as a Kubernetes pod (the pod spec comes from training/k8s_pod.py), and relays what the process reports. Training
and evaluation both launch here; the assets decide only what to run.
"""

import os
import sys
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from metaclip_assets.training import k8s_pod

TRAIN_MODULE = "metaclip_assets.training"
EVAL_MODULE = "metaclip_assets.evaluation"


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
