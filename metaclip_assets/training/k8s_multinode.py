"""Multi-node training on Kubernetes: `nodes` pods of `gpu_count` GPUs each, one torchrun agent per pod, rendezvous
(c10d) through the index-0 pod's stable DNS name. Rendered as plain dicts for either engine:

- `jobset`: a JobSet (kubernetes-sigs/jobset, cluster add-on `JOBSET_INSTALL`) with one replicated Job; the
  controller creates the Job and the headless Service that gives every pod a DNS name;
- `indexed_job`: the fallback without a controller, a plain Indexed Job plus the headless Service we create.

The pod template is k8s_pod.pod_spec (GPU limits, volumes, securityContext, tolerations), so both modes share one
home for it. No Kubernetes client here: defs/multinode_pipes.py submits what this renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from metaclip_assets.training.k8s_pod import PodSettings, pod_spec, torchrun_command

ENGINES = ("jobset", "indexed_job")
JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"
# The release whose CRD is vendored under k8s/crds/ (the tests validate against it).
JOBSET_RELEASE = "v0.12.0"
JOBSET_INSTALL = (
    "kubectl apply --server-side -f "
    f"https://github.com/kubernetes-sigs/jobset/releases/download/{JOBSET_RELEASE}/manifests.yaml"
)
REPLICATED_JOB = "node"
# Set on every pod of an Indexed Job by the Job controller (Kubernetes >= 1.28): the pod's node index.
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
NODE_RANK_ENV = "NODE_RANK"


class MultinodeSettings(PodSettings, Protocol):
    nodes: int
    multinode_engine: str
    rendezvous_port: int
    rendezvous_timeout_s: int
    ttl_seconds_after_finished: int


@dataclass(frozen=True)
class Launch:
    """What to submit and how to find it again: `objects` in creation order, the label selectors of all pods and
    of the index-0 pod (global rank 0, the one speaking Pipes)."""

    engine: str
    name: str
    namespace: str
    objects: list[dict[str, Any]]
    pods_selector: str
    leader_selector: str


def _check(settings: MultinodeSettings) -> None:
    if settings.multinode_engine not in ENGINES:
        raise ValueError(f"multinode_engine must be one of {ENGINES}, got {settings.multinode_engine!r}")
    if settings.nodes < 1 or settings.gpu_count < 1:
        raise ValueError(
            f"k8s_multinode needs nodes >= 1 and gpu_count (GPUs per node) >= 1, got {settings.nodes}, "
            f"{settings.gpu_count}; use mode 'k8s' for CPU pods"
        )


def _job_spec(
    settings: MultinodeSettings, module: str, env: dict[str, str], labels: dict[str, str], hosts: str, leader: str
) -> dict[str, Any]:
    """The Indexed Job both engines run: `hosts` is the pods' DNS name with `$(NODE_RANK)` for the index
    (Kubernetes expands `$(VAR)` in a command from the container's env)."""
    s = settings
    spec = pod_spec(s, gpu=True, container_name="trainer")
    [container] = spec["containers"]
    container["command"] = torchrun_command(
        module,
        s.gpu_count,
        nnodes=s.nodes,
        rdzv_endpoint=f"{leader}:{s.rendezvous_port}",
        rdzv_id=labels["app.kubernetes.io/instance"],
        local_addr=hosts,
        rdzv_timeout_s=s.rendezvous_timeout_s,
    )
    container["env"] = [
        {
            "name": NODE_RANK_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}},
        },
        *({"name": k, "value": v} for k, v in env.items()),
    ]
    container["ports"] = [{"name": "rendezvous", "containerPort": s.rendezvous_port, "protocol": "TCP"}]
    return {
        "completionMode": "Indexed",
        "completions": s.nodes,
        "parallelism": s.nodes,
        # no retries: any failed pod fails the job (the other ranks cannot continue without it); a re-run resumes
        # from the last checkpoint
        "backoffLimit": 0,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "NotIn", "values": [0]}}
            ]
        },
        "template": {"metadata": {"labels": labels}, "spec": spec},
    }


def render(
    settings: MultinodeSettings,
    name: str,
    namespace: str,
    module: str,
    env: dict[str, str],
    labels: dict[str, str],
) -> Launch:
    """The objects of one multi-node launch named `name` (a DNS label, <= 40 characters so pod host names fit
    in 63), every pod getting `env` (Dagster Pipes' bootstrap env included: only rank 0 opens it)."""
    _check(settings)
    s = settings
    labels = {**labels, "app.kubernetes.io/instance": name}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    if s.multinode_engine == "jobset":
        # JobSet names pods' hosts <jobset>-<replicatedJob>-<jobIndex>-<podIndex> in subdomain <jobset>
        prefix = f"{name}-{REPLICATED_JOB}-0-"
        job = _job_spec(s, module, env, labels, f"{prefix}$({NODE_RANK_ENV}).{name}", f"{prefix}0.{name}")
        jobset = {
            "apiVersion": f"{JOBSET_GROUP}/{JOBSET_VERSION}",
            "kind": "JobSet",
            "metadata": meta,
            "spec": {
                "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
                "failurePolicy": {"maxRestarts": 0},
                "ttlSecondsAfterFinished": s.ttl_seconds_after_finished,
                "replicatedJobs": [
                    {"name": REPLICATED_JOB, "replicas": 1, "template": {"metadata": {"labels": labels}, "spec": job}}
                ],
            },
        }
        pods = f"jobset.sigs.k8s.io/jobset-name={name}"
        return Launch("jobset", name, namespace, [jobset], pods, f"{pods},{COMPLETION_INDEX}=0")
    # Indexed Job pods are named <job>-<index> as hosts; the subdomain puts them in our headless Service.
    job = _job_spec(s, module, env, labels, f"{name}-$({NODE_RANK_ENV}).{name}", f"{name}-0.{name}")
    job["template"]["spec"]["subdomain"] = name
    job["ttlSecondsAfterFinished"] = s.ttl_seconds_after_finished
    pods = f"batch.kubernetes.io/job-name={name}"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            # the leader's name must resolve while the pods start, before any is Ready
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": name},
            "ports": [{"name": "rendezvous", "port": s.rendezvous_port, "targetPort": s.rendezvous_port}],
        },
    }
    job_obj = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job}
    return Launch("indexed_job", name, namespace, [service, job_obj], pods, f"{pods},{COMPLETION_INDEX}=0")
