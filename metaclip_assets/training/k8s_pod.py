"""The base pod spec of a training (or evaluation) pod, which `dagster_k8s.PipesK8sClient` completes with the name,
env and command: GPU limits, scheduling, shared memory, the data volume, non-root; and the command: one process,
or torchrun with one process per GPU. Plain data in, a dict out; the `TrainingLauncher` resource
(defs/launcher.py) holds the settings and their defaults.
"""

from __future__ import annotations

from typing import Any, Protocol


class PodSettings(Protocol):
    """The launcher settings a pod is made of (TrainingLauncher has them all)."""

    image: str
    image_pull_policy: str
    service_account: str
    gpu_count: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    pvc_claim_name: str | None
    data_mount_path: str
    shm_size: str
    env_from_secrets: list[str]
    run_as_user: int
    termination_grace_period_s: int


def pod_spec(settings: PodSettings, gpu: bool = True, container_name: str = "trainer") -> dict[str, Any]:
    """Without `gpu` the GPU limit, GPU node selector and GPU tolerations are left out (CPU work, e.g. eval)."""
    s = settings
    limits = {"cpu": s.cpu_limit, "memory": s.memory_limit}
    if gpu and s.gpu_count > 0:
        limits["nvidia.com/gpu"] = str(s.gpu_count)
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        # DataLoader workers pass batches through shared memory; the container default (64 MiB) is too small.
        # One tmpfs per pod, shared by all its ranks and counted against the pod's memory limit, so it is sized per
        # pod like memory_limit (about gpu_count x workers x prefetch x batch bytes under torchrun).
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if s.pvc_claim_name:
        mounts.append({"name": "data", "mountPath": s.data_mount_path})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": s.pvc_claim_name}})
    container: dict[str, Any] = {
        "name": container_name,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "resources": {"requests": {"cpu": s.cpu_request, "memory": s.memory_request}, "limits": limits},
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if s.env_from_secrets:
        container["envFrom"] = [{"secretRef": {"name": name}} for name in s.env_from_secrets]
    spec: dict[str, Any] = {
        "serviceAccountName": s.service_account,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": s.termination_grace_period_s,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": s.run_as_user,
            "runAsGroup": s.run_as_user,
            "fsGroup": s.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }

    def keep(key: str) -> bool:
        return gpu or not key.startswith("nvidia.com/")

    node_selector = {k: v for k, v in s.node_selector.items() if keep(k)}
    tolerations = [dict(t) for t in s.tolerations if keep(t.get("key", ""))]
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def pod_command(module: str, processes: int = 1) -> list[str]:
    """`python -m module`, or torchrun with `processes` (one per GPU) workers on this pod."""
    return ["python", "-m", module] if processes <= 1 else torchrun_command(module, processes)


def torchrun_command(
    module: str,
    nproc_per_node: int,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    local_addr: str | None = None,
    rdzv_timeout_s: int = 900,
) -> list[str]:
    """torchrun for one node (`--standalone`) or `nnodes` nodes (c10d rendezvous at `rdzv_endpoint`). No
    `--tee`/`--redirects`: workers inherit the agent's stdout, so rank 0's Pipes messages reach the pod log
    byte for byte (tee'd lines get a `[default0]:` prefix)."""
    if nnodes == 1:
        return ["torchrun", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m", module]
    if not (rdzv_endpoint and rdzv_id):
        raise ValueError("a multi-node torchrun needs rdzv_endpoint (the leader's host:port) and rdzv_id")
    command = [
        "torchrun",
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={rdzv_endpoint}",
        f"--rdzv_id={rdzv_id}",
        # join: all pods scheduled and pulled; read: the store client's connect, i.e. until the leader's DNS name
        # resolves (its default of 60 s is shorter than an image pull)
        f"--rdzv_conf=join_timeout={rdzv_timeout_s},read_timeout={rdzv_timeout_s}",
        "--max_restarts=0",  # a failed rank fails the pod, the pod fails the job; a re-run resumes
    ]
    if local_addr:
        # c10d numbers nodes by sorted address (node_rank is ignored outside static rendezvous): naming each pod
        # by its index-suffixed DNS name puts index 0 first, so global rank 0 (Pipes, checkpoints) is in pod 0.
        command.append(f"--local_addr={local_addr}")
    return [*command, "-m", module]
