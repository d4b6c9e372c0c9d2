"""Kubernetes without a cluster: the training pod PipesK8sClient would submit and every manifest in k8s/ validated
against the Kubernetes 1.33 schema in strict mode, the Helm values against the chart's structure, and a full
PipesK8sClient.run() against a fake CoreV1Api that runs the pod's command locally (platform notes, section 6).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster_k8s import PipesK8sClient
from dagster_k8s.client import DagsterKubernetesClient
from dagster_k8s.pipes import build_pod_body

from metaclip_assets.defs.launcher import TRAIN_MODULE, TrainingLauncher
from metaclip_assets.defs.training_assets import clip_checkpoint
from metaclip_assets.training.toy_data import make_toy_shards
from metaclip_assets_tests.conftest import materialize, snapshot_instance, storage_resources

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
K8S_VERSION = "1.33.0"
HELM_VALUES = K8S / "helm-values.yaml"


def to_dict(model) -> dict:
    return kubernetes.client.ApiClient().sanitize_for_serialization(model)


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises ValidationError on any unknown field


def training_pod(launcher: TrainingLauncher, env: dict[str, str] | None = None) -> dict:
    """The pod PipesK8sClient.run() builds from the launcher's config (same function, same arguments)."""
    body = build_pod_body(
        pod_name="dagster-abc-clip-checkpoint-1",
        image=None,
        command=["python", "-m", TRAIN_MODULE],
        env_vars={"DAGSTER_PIPES_CONTEXT": "x", "DAGSTER_PIPES_MESSAGES": "y", **(env or {})},
        base_pod_meta={"labels": dict(launcher.pod_labels)},
        base_pod_spec=launcher.pod_spec(),
    )
    return {"apiVersion": "v1", "kind": "Pod", **to_dict(body)}


def assert_hardened(container: dict, pod_spec: dict) -> None:
    pod_sc, sc = pod_spec["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]


# ---- the training pod ----------------------------------------------------------------------------------------
def test_training_pod_validates_strict_with_gpu_limits_and_non_root():
    launcher = TrainingLauncher(
        mode="k8s",
        image="registry.example/metaclip-train:1",
        gpu_count=4,
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
        env_from_secrets=["metaclip-env"],
    )
    pod = training_pod(launcher)
    validate(pod)
    spec = pod["spec"]
    [container] = spec["containers"]
    assert container["image"] == "registry.example/metaclip-train:1"
    assert container["command"] == ["python", "-m", "metaclip_assets.training"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == "4" and limits["memory"] and limits["cpu"]
    assert requests["cpu"] and requests["memory"]
    assert_hardened(container, spec)
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "metaclip-trainer"
    assert spec["terminationGracePeriodSeconds"] >= 60  # SIGTERM -> finish the step, write a checkpoint
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "metaclip-data"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/dev/shm", "/data", "/tmp"} <= mounts
    assert container["envFrom"] == [{"secretRef": {"name": "metaclip-env"}}]
    assert {e["name"] for e in container["env"]} >= {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "metaclip-train"


def test_cpu_pod_and_object_store_variant_validate():
    launcher = TrainingLauncher(
        mode="k8s", gpu_count=0, pvc_claim_name=None, node_selector={}, tolerations=[], data_root="s3://bucket/metaclip"
    )
    pod = training_pod(launcher)
    validate(pod)
    [container] = pod["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"] and "data" not in {
        v["name"] for v in pod["spec"]["volumes"]
    }
    assert launcher.training_data_root("ignored") == "s3://bucket/metaclip"


def test_strict_validation_rejects_a_typo():
    pod = training_pod(TrainingLauncher(mode="k8s"))
    pod["spec"]["containers"][0]["resource"] = pod["spec"]["containers"][0].pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


# ---- manifests and Helm values ---------------------------------------------------------------------------------
def manifest_docs() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path == HELM_VALUES or "crds" in path.parts:  # vendored CRDs: test_k8s_multinode validates against them
            continue
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_manifest_validates_strict():
    docs = manifest_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim"} <= kinds
    for name, doc in docs:
        validate(doc)
        assert doc["metadata"].get("namespace", "metaclip") == "metaclip", name


def test_rbac_lets_run_pods_manage_training_pods():
    docs = [d for _, d in manifest_docs()]
    role = next(d for d in docs if d["kind"] == "Role")
    rules = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    # what PipesK8sClient calls: create, read/list (wait_for_pod), read log (the Pipes messages), delete
    assert {("pods", "create"), ("pods", "get"), ("pods", "list"), ("pods", "delete"), ("pods/log", "get")} <= rules
    # what the k8s_multinode client calls (multinode_pipes.py), and nothing more on those resources
    groups = {r: tuple(rule["apiGroups"]) for rule in role["rules"] for r in rule["resources"]}
    assert groups["jobs"] == ("batch",) and groups["jobsets"] == ("jobset.x-k8s.io",) and groups["services"] == ("",)
    assert {v for r, v in rules if r in ("jobs", "jobsets")} == {"create", "get", "delete"}
    assert {v for r, v in rules if r == "services"} == {"create", "delete"}
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": values["global"]["serviceAccountName"], "namespace": "metaclip"}
    ]
    trainer = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert trainer["metadata"]["name"] == TrainingLauncher().service_account
    assert trainer["automountServiceAccountToken"] is False


# Keys of the official chart's values (helm/dagster/schema: DagsterHelmValues, UserDeployment, K8sRunLauncherConfig,
# Concurrency, RunCoordinator, PostgreSQL), so a misspelt key fails here instead of being ignored by Helm.
CHART_TOP = {
    "dagsterWebserver",
    "dagster-user-deployments",
    "postgresql",
    "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret",
    "rabbitmq",
    "redis",
    "flower",
    "ingress",
    "imagePullSecrets",
    "computeLogManager",
    "scheduler",
    "runLauncher",
    "pythonLogs",
    "dagsterDaemon",
    "busybox",
    "migrate",
    "telemetry",
    "serviceAccount",
    "global",
    "retention",
    "concurrency",
    "additionalInstanceConfig",
}
USER_DEPLOYMENT = {
    "name",
    "image",
    "port",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
}
K8S_RUN_LAUNCHER = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "runK8sConfig",
}
POSTGRESQL = {
    "postgresqlScheme",
    "image",
    "enabled",
    "postgresqlHost",
    "postgresqlUsername",
    "postgresqlPassword",
    "postgresqlDatabase",
    "postgresqlParams",
    "service",
}


def test_helm_values_follow_the_chart_structure():
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert set(values) <= CHART_TOP, set(values) - CHART_TOP
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True and user["enableSubchart"] is True
    [deployment] = user["deployments"]
    assert set(deployment) <= USER_DEPLOYMENT, set(deployment) - USER_DEPLOYMENT
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "metaclip_assets.definitions"] and deployment["port"] == 3030
    assert set(deployment["image"]) == {"repository", "tag", "pullPolicy"}
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    # one run (pod) per shard for backfills and automation, and a shard count the partitions accept
    from metaclip_assets.defs.partitions import BACKFILL_MODES, backfill_policy_from_env

    assert env["METACLIP_BACKFILL"] == "per_key" and env["METACLIP_BACKFILL"] in BACKFILL_MODES
    assert backfill_policy_from_env(env["METACLIP_BACKFILL"]).max_partitions_per_run == 1
    assert int(env["METACLIP_NUM_SHARDS"]) >= 1
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher" and set(launcher["config"]) == {"k8sRunLauncher"}
    assert set(launcher["config"]["k8sRunLauncher"]) <= K8S_RUN_LAUNCHER
    assert set(values["postgresql"]) <= POSTGRESQL and values["postgresql"]["enabled"] is True
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator" and set(coordinator) == {"enabled", "type", "config"}
    concurrency = values["concurrency"]
    assert set(concurrency) <= {"enabled", "pools", "runs"}
    assert set(concurrency["pools"]) <= {"defaultLimit", "granularity", "opGranularityRunBuffer"}
    assert set(concurrency["runs"]) <= {"maxConcurrentRuns", "tagConcurrencyLimits"}
    # the chart refuses maxConcurrentRuns in both places
    assert "maxConcurrentRuns" not in coordinator["config"].get("queuedRunCoordinator", {})
    # The Kubernetes fragments the chart copies into the user-code pod, validated as that pod.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "user-code"},
        "spec": {
            "securityContext": deployment["podSecurityContext"],
            "volumes": deployment["volumes"],
            "containers": [
                {
                    "name": "user-code",
                    "image": "x",
                    "env": deployment["env"],
                    "envFrom": [{"secretRef": s} for s in deployment["envSecrets"]],
                    "volumeMounts": deployment["volumeMounts"],
                    "resources": deployment["resources"],
                    "securityContext": deployment["securityContext"],
                }
            ],
        },
    }
    validate(pod)
    assert_hardened(pod["spec"]["containers"][0], pod["spec"])
    assert deployment["resources"]["limits"]["memory"]
    claim = next(d for _, d in manifest_docs() if d["kind"] == "PersistentVolumeClaim")
    assert deployment["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_training_image_installs_only_what_training_imports():
    text = "\n".join(
        line for line in (K8S / "Dockerfile.train").read_text().splitlines() if not line.lstrip().startswith("#")
    )
    # the image's pins are the project's (pyproject.toml is their one home; mlflow-skinny follows mlflow)
    import re
    import tomllib

    project = tomllib.loads((K8S.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in project if "==" in d)
    image = dict(re.findall(r"([A-Za-z0-9_.-]+)==(\S+)", text))
    for name in ("torch", "torchvision", "open-clip-torch", "webdataset", "dagster-pipes", "matplotlib"):
        assert image[name] == pinned[name], (name, image[name], pinned[name])
    assert image["mlflow-skinny"] == pinned["mlflow"]
    for heavy in ("dagster==", "polars", "mlflow==", "pip install ."):
        assert heavy not in text
    assert "USER 1000" in text and "COPY metaclip_assets/training" in text
    assert "metaclip_assets/settings.py metaclip_assets/layout.py" in text
    # what the image copies is enough for what its pods import: test_k8s_image.py walks the entry points' imports
    # (training/plan.py, for one, runs in the Dagster process and may use storage.py, which the image lacks)


# ---- PipesK8sClient.run() end to end, against a fake cluster --------------------------------------------------
def terminated_pod(metadata, container: str, exit_code: int) -> kubernetes.client.V1Pod:
    """A pod whose one container has exited with `exit_code`, as the API server reports it."""
    terminated = kubernetes.client.V1ContainerStateTerminated(
        exit_code=exit_code, reason="Completed" if exit_code == 0 else "Error"
    )
    status = kubernetes.client.V1ContainerStatus(
        name=container,
        image="x",
        image_id="x",
        ready=False,
        restart_count=0,
        state=kubernetes.client.V1ContainerState(terminated=terminated),
    )
    phase = "Succeeded" if exit_code == 0 else "Failed"
    return kubernetes.client.V1Pod(
        metadata=metadata, status=kubernetes.client.V1PodStatus(phase=phase, container_statuses=[status])
    )


class FakeCoreV1Api:
    """Runs the pod's first container command as a local process; serves its output as the pod log."""

    def __init__(self, cwd: Path):
        self.cwd, self.pods, self.logs, self.deleted = cwd, {}, {}, []

    def create_namespaced_pod(self, namespace, body):
        validate({"apiVersion": "v1", "kind": "Pod", **to_dict(body)})
        self.pods[body.metadata.name] = body
        container = body.spec.containers[0]
        command = [sys.executable if c == "python" else c for c in container.command]
        env = {**os.environ, **{e.name: e.value for e in container.env}}
        proc = subprocess.run(
            command, env=env, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300
        )
        start = dt.datetime.now(dt.UTC)
        self.logs[body.metadata.name] = b"".join(  # kubelet prefixes each line with an RFC3339 timestamp
            f"{(start + dt.timedelta(microseconds=i)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')} ".encode() + line + b"\n"
            for i, line in enumerate(proc.stdout.splitlines())
        )
        self.exit_codes = getattr(self, "exit_codes", {}) | {body.metadata.name: proc.returncode}

    def _pod(self, name):
        return terminated_pod(self.pods[name].metadata, self.pods[name].spec.containers[0].name, self.exit_codes[name])

    def list_namespaced_pod(self, namespace, field_selector):
        name = field_selector.split("=", 1)[1]
        return SimpleNamespace(items=[self._pod(name)] if name in self.pods else [])

    def read_namespaced_pod(self, name, namespace):
        return self._pod(name)

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        return iter([self.logs[name]])

    def delete_namespaced_pod(self, name, namespace):
        self.deleted.append(name)


@pytest.mark.slow
def test_pipes_k8s_client_run_reports_metadata_and_check(tmp_path):
    data_root = tmp_path / "data"
    make_toy_shards(data_root / "shards" / "CC-MAIN-2024-10", n_shards=1, per_shard=32, seed=5)
    fake = FakeCoreV1Api(REPO)
    client = DagsterKubernetesClient(
        batch_api=mock.MagicMock(), core_api=fake, logger=lambda *_: None, sleeper=lambda *_: None, timer=time.time
    )
    launcher = TrainingLauncher(
        mode="k8s",
        data_root=str(data_root),
        poll_interval=0.01,
        env={"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": "none"},
    )
    with (
        mock.patch.object(DagsterKubernetesClient, "production_client", return_value=client),
        mock.patch.object(PipesK8sClient, "_load_k8s_config", lambda self: None),
        snapshot_instance("CC-MAIN-2024-10") as instance,
    ):
        result = materialize(
            [clip_checkpoint],
            partition_key="CC-MAIN-2024-10",
            instance=instance,
            resources=storage_resources(data_root, training_launcher=launcher),
            run_config={"ops": {"clip_checkpoint": {"config": {"batch_size": 8, "samples_budget": 16, "threads": 1}}}},
        )
    assert result.success
    [name] = fake.pods
    pod = fake.pods[name]
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1" and fake.deleted == [name]
    md = result.asset_materializations_for_node("clip_checkpoint")[0].metadata
    assert md["launcher"].value == "k8s" and md["steps"].value == 2 and md["samples_seen"].value == 16
    assert md["checkpoint_path"].path.startswith(str(data_root)) and Path(md["checkpoint_path"].path).exists()
    assert "mlflow_run_id" not in md  # tracking switched off by env for this test
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "loss_finite" and check.passed and check.metadata["steps"].value == 2


def test_user_code_image_compiles_the_extension_in_a_build_stage():
    """pyproject declares a C extension (metaclip_assets/_native/*.c): the slim image has no compiler, so a build stage
    with gcc makes the wheel and the runtime stage installs that wheel, not the source tree."""
    text = "\n".join(
        line for line in (K8S / "Dockerfile.user-code").read_text().splitlines() if not line.lstrip().startswith("#")
    )
    build, _, runtime = text.rpartition("\nFROM ")  # the last FROM starts the runtime stage
    assert " AS build" in build and "gcc" in build and "pip wheel" in build and "-w /wheels ." in build
    assert "COPY --from=build /wheels /wheels" in runtime and "pip install --no-cache-dir /wheels/*.whl" in runtime
    assert "gcc" not in runtime and "COPY metaclip_assets" not in runtime
    ext = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["ext-modules"]
    native = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "metaclip_assets" / "_native").glob("*.c"))
    assert len(native) > 1 and "metaclip_assets/_native/module.c" in native  # one C file per kernel + module.c
    assert [(e["name"], sorted(e["sources"])) for e in ext] == [("metaclip_assets._native._kernels", native)]
