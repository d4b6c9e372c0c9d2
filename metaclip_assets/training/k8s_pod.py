"""The base pod spec of a training (or evaluation) pod, which `dagster_k8s.PipesK8sClient` completes with the name,
env and command: GPU limits, scheduling, shared memory, the data volume, non-root. Plain data in, a dict out; the
`TrainingLauncher` resource (defs/launcher.py) holds the settings and their defaults.
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
