"""Beyond one GPU on Kubernetes, without a cluster: the multi-GPU pod's torchrun command (run for real on CPU), the
k8s_multinode manifests (core objects strict against Kubernetes 1.33, the JobSet against its vendored CRD's own
schema with unknown fields refused), c10d putting global rank 0 in pod 0 (two real torchrun agents), and the
multi-node Pipes client's create/stream/wait/cleanup against a fake Kubernetes API inside a real materialization.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from unittest import mock

import dagster as dg
import jsonschema
import kubernetes
import pytest
import yaml
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_k8s import PipesK8sClient
from dagster_k8s.pipes import build_pod_body

from metaclip_assets.defs.launcher import EVAL_MODULE, TRAIN_MODULE, TrainingLauncher
from metaclip_assets.defs.multinode_pipes import K8sApis, PipesK8sMultinodeClient
from metaclip_assets.training import k8s_multinode as mn
from metaclip_assets.training.k8s_pod import torchrun_command
from metaclip_assets_tests.defs.test_k8s import K8S, REPO, terminated_pod, to_dict, validate

CRD = K8S / "crds" / "jobset.x-k8s.io_jobsets.yaml"
PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msg"}


def launcher(**kw) -> TrainingLauncher:
    defaults = {"image": "registry.example/metaclip-train:1", "gpu_count": 8, "nodes": 4}
    return TrainingLauncher(mode="k8s_multinode", **{**defaults, **kw})


def render(engine: str = "jobset", **kw) -> mn.Launch:
    s = launcher(multinode_engine=engine, **kw)
    return mn.render(s, "metaclip-1a2b3c4d-x1", "metaclip", TRAIN_MODULE, PIPES_ENV, {"app.kubernetes.io/name": "t"})


# ---- the JobSet CRD's own schema, structural: unknown fields refused -------------------------------------------
def closed(schema: dict) -> dict:
    """The CRD schema as the API server prunes/refuses: an object with `properties` admits no other field unless
    it says x-kubernetes-preserve-unknown-fields; objects without properties (metadata) stay open."""
    schema = dict(schema)
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {k: closed(v) for k, v in schema[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            schema[key] = closed(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [closed(s) for s in schema[key]]
    return schema


@pytest.fixture(scope="module")
def jobset_validator() -> jsonschema.Draft4Validator:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["group"] == mn.JOBSET_GROUP and crd["spec"]["names"]["plural"] == mn.JOBSET_PLURAL
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == mn.JOBSET_VERSION and v["served"]]
    return jsonschema.Draft4Validator(closed(version["schema"]["openAPIV3Schema"]))


def test_vendored_crd_is_the_pinned_release():
    notes = (K8S / "crds" / "README.md").read_text()
    assert mn.JOBSET_RELEASE in notes and "Apache-2.0" in notes and mn.JOBSET_INSTALL in notes
    assert (
        mn.JOBSET_RELEASE in (K8S / "README.md").read_text() and mn.JOBSET_INSTALL in (REPO / "README.md").read_text()
    )


def test_jobset_validates_against_its_crd_and_its_job_strict(jobset_validator):
    launch = render("jobset")
    [jobset] = launch.objects
    jobset_validator.validate(jobset)
    spec = jobset["spec"]
    assert spec["failurePolicy"] == {"maxRestarts": 0} and spec["ttlSecondsAfterFinished"] == 3600
    assert spec["network"]["enableDNSHostnames"] is True
    [rj] = spec["replicatedJobs"]
    job = rj["template"]["spec"]
    # the Job JobSet creates, as the Kubernetes schema sees it
    validate({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, "spec": job})
    assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"] == 4
    assert job["backoffLimit"] == 0 and job["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    pod = job["template"]["spec"]
    [c] = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8" and pod["restartPolicy"] == "Never"
    name = launch.name
    leader = f"{name}-{mn.REPLICATED_JOB}-0-0.{name}"  # JobSet docs: <jobset>-<rjob>-<jobIndex>-<podIndex>.<subdomain>
    assert c["command"][:7] == [
        "torchrun",
        "--nnodes=4",
        "--nproc_per_node=8",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={leader}:29500",
        f"--rdzv_id={name}",
        "--rdzv_conf=join_timeout=900,read_timeout=900",
    ]
    assert f"--local_addr={name}-{mn.REPLICATED_JOB}-0-$(NODE_RANK).{name}" in c["command"]
    assert c["command"][-2:] == ["-m", TRAIN_MODULE]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.annotations['{mn.COMPLETION_INDEX}']"
    assert env["DAGSTER_PIPES_CONTEXT"]["value"] == "ctx"
    assert launch.leader_selector == f"jobset.sigs.k8s.io/jobset-name={name},{mn.COMPLETION_INDEX}=0"
    assert len(f"{name}-{mn.REPLICATED_JOB}-0-3") <= 63


def test_crd_schema_refuses_typos(jobset_validator):
    [jobset] = render("jobset").objects
    for path in (("spec", "failurPolicy"), ("spec", "replicatedJobs", 0, "template", "spec", "completion")):
        bad = copy.deepcopy(jobset)
        parent = bad
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = 1
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            jobset_validator.validate(bad)
    bad = copy.deepcopy(jobset)
    container = bad["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        jobset_validator.validate(bad)


def test_indexed_job_and_headless_service_validate_strict():
    launch = render("indexed_job", nodes=3, rendezvous_port=29600)
    service, job = launch.objects
    for obj in launch.objects:
        validate(obj)
    name = launch.name
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 3600
    assert spec["template"]["spec"]["subdomain"] == name  # pod i is <job>-i.<service>
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert f"--rdzv_endpoint={name}-0.{name}:29600" in command and f"--local_addr={name}-$(NODE_RANK).{name}" in command
    assert launch.pods_selector == f"batch.kubernetes.io/job-name={name}"


def test_pod_zero_sorts_first_whatever_the_node_count():
    # c10d numbers nodes by sorted address: index 0's host name must come first for every node count
    for n in (2, 11, 128):
        hosts = [f"metaclip-1a2b3c4d-x1-{i}.metaclip-1a2b3c4d-x1" for i in range(n)]
        assert sorted(hosts)[0] == hosts[0]


def test_settings_errors_say_what_to_do():
    with pytest.raises(ValueError, match="multinode_engine"):
        render("kubeflow")
    with pytest.raises(ValueError, match="mode 'k8s' for CPU"):
        mn.render(launcher(gpu_count=0), "n", "ns", TRAIN_MODULE, {}, {})


# ---- mode k8s: the multi-GPU pod ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "gpus", "expected"),
    [
        (TRAIN_MODULE, 4, ["torchrun", "--standalone", "--nproc_per_node=4", "-m", TRAIN_MODULE]),
        (TRAIN_MODULE, 1, ["python", "-m", TRAIN_MODULE]),
        (EVAL_MODULE, 4, ["python", "-m", EVAL_MODULE]),
    ],
)
def test_k8s_pod_runs_torchrun_per_gpu_for_training_only(module, gpus, expected):
    resource = TrainingLauncher(mode="k8s", gpu_count=gpus)
    with mock.patch.object(PipesK8sClient, "run", autospec=True) as run:
        resource.launch(mock.MagicMock(), {}, module=module, gpu=module == TRAIN_MODULE)
    kwargs = run.call_args.kwargs
    assert kwargs["command"] == expected
    pod = build_pod_body("p", None, kwargs["command"], {**PIPES_ENV, **kwargs["env"]}, None, kwargs["base_pod_spec"])
    validate({"apiVersion": "v1", "kind": "Pod", **to_dict(pod)})


PROBE = textwrap.dedent("""
    import json, os, sys
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        print(json.dumps({"__dagster_pipes_version": "0.1", "method": "opened", "params": {"rank": rank}}))
        print(json.dumps({"__dagster_pipes_version": "0.1", "method": "closed", "params": {}}), file=sys.stderr)
    else:  # as the trainer does (distributed.redirect_output): only rank 0 writes to the pod's streams
        with open(f"rank-{rank}.log", "w") as log:
            print(f"rank {rank} of {os.environ['WORLD_SIZE']}", file=log)
""")


def torchrun(command: list[str]) -> list[str]:
    assert command[0] == "torchrun"
    return [sys.executable, "-m", "torch.distributed.run", *command[1:]]  # what the image's torchrun script runs


def test_rendered_torchrun_passes_rank0_stdout_unprefixed(tmp_path):
    (tmp_path / "probe_rank0.py").write_text(PROBE)
    command = torchrun(torchrun_command("probe_rank0", 2))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out, err = proc.stdout.splitlines(), proc.stderr.splitlines()
    assert '{"__dagster_pipes_version": "0.1", "method": "opened", "params": {"rank": 0}}' in out
    assert '{"__dagster_pipes_version": "0.1", "method": "closed", "params": {}}' in err
    assert (tmp_path / "rank-1.log").read_text() == "rank 1 of 2\n" and not any("rank 1" in line for line in out)


@pytest.mark.slow
def test_c10d_puts_rank0_on_node_index_0_even_when_it_joins_last(tmp_path):
    """Two torchrun agents on loopback addresses standing for pods 0 and 1; pod 1 starts first."""
    (tmp_path / "probe_node.py").write_text(
        "import os; print('NODE', os.environ['NODE'], 'RANK', os.environ['RANK'], flush=True)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = 29000 + os.getpid() % 1000

    def agent(node: int) -> subprocess.Popen:
        command = torchrun_command(
            "probe_node",
            1,
            nnodes=2,
            rdzv_endpoint=f"127.0.0.1:{port}",
            rdzv_id="t",
            local_addr=f"127.0.0.{node + 1}",
            rdzv_timeout_s=60,
        )
        return subprocess.Popen(
            torchrun(command), cwd=tmp_path, env={**env, "NODE": str(node)}, stdout=subprocess.PIPE, text=True
        )

    late = agent(1)
    first = agent(0)
    outs = [first.communicate(timeout=120)[0], late.communicate(timeout=120)[0]]
    assert first.returncode == late.returncode == 0
    assert "NODE 0 RANK 0" in outs[0] and "NODE 1 RANK 1" in outs[1]


# ---- the Pipes client against a fake cluster -------------------------------------------------------------------
RANK0 = textwrap.dedent("""
    import os
    from dagster_pipes import open_dagster_pipes
    with open_dagster_pipes() as pipes:
        pipes.log.info("rank 0 of node " + os.environ["NODE_RANK"])
        pipes.report_asset_materialization(metadata={"world_size": 32, "samples_seen": 16})
    print("plain stdout of rank 0")
""")


def pod(name: str, index: int, exit_code: int) -> kubernetes.client.V1Pod:
    meta = kubernetes.client.V1ObjectMeta(name=name, labels={mn.COMPLETION_INDEX: str(index)})
    return terminated_pod(meta, "trainer", exit_code)


class FakeCluster:
    """CustomObjectsApi + BatchV1Api + CoreV1Api in one: creating the job "runs" pod 0 (a real Dagster Pipes
    process with the pod's env) and serves its output as the pod log; `exits` are the pods' exit codes."""

    def __init__(self, exits: tuple[int, ...] = (0, 0), finish: bool = True):
        self.exits, self.finish = exits, finish
        self.calls: list[tuple] = []
        self.created: dict[str, dict] = {}
        self.pods: list = []
        self.log = b""

    def _start(self, body: dict, pod_template: dict) -> None:
        [container] = pod_template["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        proc = subprocess.run(
            [sys.executable, "-c", RANK0], env={**os.environ, **env, "NODE_RANK": "0"}, capture_output=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        t0 = dt.datetime.now(dt.UTC)
        self.log = b"".join(  # kubelet's "<RFC3339> <line>"
            f"{(t0 + dt.timedelta(microseconds=i)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')} ".encode() + line + b"\n"
            for i, line in enumerate((proc.stdout + proc.stderr).splitlines())
        )
        name = body["metadata"]["name"]
        self.pods = [pod(f"{name}-{i}-abcde", i, code) for i, code in enumerate(self.exits)]

    # CustomObjectsApi
    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append(("create", body["kind"], body["metadata"]["name"]))
        self.created[body["kind"]] = body
        self._start(body, body["spec"]["replicatedJobs"][0]["template"]["spec"]["template"])

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return {"status": {"conditions": [{"type": t, "status": "True"} for t in self._conditions("Completed")]}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, propagation_policy):
        self.calls.append(("delete", "JobSet", name, propagation_policy))

    # BatchV1Api
    def create_namespaced_job(self, namespace, body):
        validate(body)
        self.calls.append(("create", "Job", body["metadata"]["name"]))
        self.created["Job"] = body
        self._start(body, body["spec"]["template"])

    def read_namespaced_job(self, name, namespace):
        conditions = [SimpleNamespace(type=t, status="True") for t in self._conditions("Complete")]
        return SimpleNamespace(status=SimpleNamespace(conditions=conditions))

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.calls.append(("delete", "Job", name, propagation_policy))

    def _conditions(self, done: str) -> list[str]:
        if not self.finish:
            return []
        return ["Failed"] if any(self.exits) else [done]

    # CoreV1Api
    def create_namespaced_service(self, namespace, body):
        validate(body)
        self.calls.append(("create", "Service", body["metadata"]["name"]))

    def delete_namespaced_service(self, name, namespace):
        self.calls.append(("delete", "Service", name))

    def list_namespaced_pod(self, namespace, field_selector=None, label_selector=None):
        if field_selector:
            return SimpleNamespace(items=[p for p in self.pods if f"metadata.name={p.metadata.name}" == field_selector])
        if label_selector.endswith(f"{mn.COMPLETION_INDEX}=0"):
            return SimpleNamespace(items=self.pods[:1])
        return SimpleNamespace(items=self.pods)

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.calls.append(("log", name))
        return iter([self.log])


@dg.asset
def trained(context, training_launcher: TrainingLauncher):
    yield from training_launcher.launch_and_relay(context, "train_config", {"output_dir": "/data/out"})


def run_multinode(fake: FakeCluster, engine: str, tick=None):
    resource = launcher(multinode_engine=engine, nodes=len(fake.exits), poll_interval=0.01)
    apis = K8sApis(core=fake, batch=fake, custom=fake)
    with (
        mock.patch.object(PipesK8sMultinodeClient, "_cluster_apis", lambda self: apis),
        mock.patch.object(PipesK8sMultinodeClient, "_tick", tick or PipesK8sMultinodeClient._tick),
    ):
        return dg.materialize([trained], resources={"training_launcher": resource}, raise_on_error=False)


def failure_text(result) -> str:
    """The step failure's messages down its cause chain (the user error is the cause of Dagster's wrapper)."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, texts = failure.step_failure_data.error, []
    while error:
        texts.append(error.message)
        error = error.cause
    return "\n".join(texts)


@pytest.mark.parametrize("engine", mn.ENGINES)
def test_multinode_client_streams_rank0_into_the_run_and_cleans_up(engine, capfd):
    fake = FakeCluster(exits=(0, 0))
    result = run_multinode(fake, engine)
    assert result.success
    [md] = [m.metadata for m in result.asset_materializations_for_node("trained")]
    assert md["world_size"].value == 32 and md["launcher"].value == "k8s_multinode"
    captured = capfd.readouterr()
    assert "rank 0 of node 0" in captured.err  # rank 0's Pipes log message, as a run log record
    assert "plain stdout of rank 0" in captured.out  # non-Pipes lines go to the run's stdout
    name = next(c[2] for c in fake.calls if c[0] == "create")
    kinds = ["JobSet"] if engine == "jobset" else ["Service", "Job"]
    assert [c[1] for c in fake.calls if c[0] == "create"] == kinds
    assert ("log", f"{name}-0-abcde") in fake.calls  # the index-0 pod's log
    deleted = [c for c in fake.calls if c[0] == "delete"]
    assert [c[1] for c in deleted] == kinds[::-1]
    assert all(c[3] == "Background" for c in deleted if c[1] != "Service")


@pytest.mark.parametrize("engine", mn.ENGINES)
def test_a_failed_pod_fails_the_run_naming_it_and_cleans_up(engine):
    fake = FakeCluster(exits=(0, 1, 0))
    result = run_multinode(fake, engine)
    assert not result.success
    message = failure_text(result)
    name = fake.created["JobSet" if engine == "jobset" else "Job"]["metadata"]["name"]
    assert f"pod {name}-1-abcde (node 1): trainer exit 1 (Error)" in message and "resume" in message
    assert any(c[0] == "delete" and c[2] == name for c in fake.calls)


def test_run_termination_deletes_the_jobset():
    def interrupt(*_):
        raise DagsterExecutionInterruptedError()

    fake = FakeCluster(exits=(0, 0), finish=False)  # rank 0 done, the job never finishes, the run is terminated
    result = run_multinode(fake, "jobset", tick=interrupt)
    assert not result.success
    assert [c[:2] for c in fake.calls if c[0] == "delete"] == [("delete", "JobSet")]


def test_missing_jobset_controller_says_how_to_install_it():
    fake = FakeCluster()

    def no_crd(*args, **kwargs):
        raise kubernetes.client.ApiException(status=404, reason="Not Found")

    fake.create_namespaced_custom_object = no_crd
    result = run_multinode(fake, "jobset")
    assert mn.JOBSET_INSTALL in failure_text(result) and "indexed_job" in failure_text(result)


def test_rendered_jobset_roundtrips_as_json():
    # the body goes to CustomObjectsApi as JSON: plain, serialisable data only
    [jobset] = render("jobset").objects
    assert json.loads(json.dumps(jobset)) == jobset
