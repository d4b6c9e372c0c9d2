"""Run monitoring as shipped (deploy/dagster-embedded.yaml, deploy/dagster.yaml, k8s/helm-values.yaml): a run whose
process is killed with SIGKILL is marked FAILURE by the monitoring daemon's own iteration, its pool slot is freed, and
runs stuck in STARTING or CANCELING are ended by the configured timeouts. The kills are real: a real
`dagster asset materialize` process, and a run worker launched through the instance's run launcher by a real code
server, each killed while its asset sleeps."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import EngineEventData
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._core.test_utils import create_run_for_test
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget, PythonFileTarget
from dagster._daemon.monitoring import concurrency as slot_monitoring
from dagster._daemon.monitoring import run_monitoring

from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.run_launcher import LocalProcessRunLauncher, process_start_time, worker_gone

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "deploy" / "dagster-embedded.yaml"
PRODUCTION = REPO / "deploy" / "dagster.yaml"
HELM_VALUES = REPO / "k8s" / "helm-values.yaml"
BIN = Path(sys.executable).parent
LOG = logging.getLogger("test_run_monitoring")

# A sleeping asset in the `gpu` pool, run in the process that runs the run (as scripts/run-sample.sh runs steps).
CODE = """
import time
import dagster as dg

@dg.asset(pool="gpu")
def sleepy():
    time.sleep(300)

defs = dg.Definitions(assets=[sleepy], jobs=[dg.define_asset_job("sleepy_job", ["sleepy"])],
                      executor=dg.in_process_executor)
"""


@pytest.fixture
def home(tmp_path) -> Path:
    """A DAGSTER_HOME with the embedded default's instance config (sqlite storage under it)."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(EMBEDDED.read_text())
    (tmp_path / "sleepy.py").write_text(textwrap.dedent(CODE))
    return tmp_path / "home"


@contextlib.contextmanager
def instance_at(home: Path):
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        yield instance
    finally:
        instance.dispose()


def monitor(instance: dg.DagsterInstance) -> None:
    """One pass of the monitoring daemon (MonitoringDaemon.run_iteration), as `dagster dev` runs every poll."""
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        errors = [e for e in run_monitoring.execute_run_monitoring_iteration(context, LOG) if e]
        errors += [e for e in slot_monitoring.execute_concurrency_slots_iteration(context, LOG) if e]
    assert not errors, errors


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return found


def step_started(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    for run in instance.get_runs():
        if instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records:
            return run
    return None


def run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int:
    found = instance.run_launcher.run_process(run)
    assert found is not None, "the run's process reported no pid"
    return found[0]


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def assert_failed_for_dead_worker(instance: dg.DagsterInstance, run_id: str, pid: int) -> None:
    run = instance.get_run_by_id(run_id)
    assert run.status == dg.DagsterRunStatus.FAILURE
    messages = [e.message for e in instance.all_logs(run_id)]
    assert any(f"run worker process {pid} no longer exists" in m for m in messages), messages[-5:]


def clock_at(module, seconds: float, monkeypatch) -> None:
    """The monitoring code's notion of now, `seconds` from the real now."""
    now = time.time() + seconds
    monkeypatch.setattr(module, "get_current_timestamp", lambda: now, raising=False)
    monkeypatch.setattr(
        module, "get_current_datetime", lambda: datetime.datetime.fromtimestamp(now, datetime.UTC), raising=False
    )


@pytest.mark.slow
def test_killed_cli_run_is_marked_failed_and_frees_its_pool_slot(home, monkeypatch):
    """The 34 runs of the attack: `dagster asset materialize` (scripts/run-sample.sh) killed with SIGKILL."""
    with instance_at(home) as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", 1)  # = dagster instance concurrency set gpu 1
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    cli = subprocess.Popen(
        [str(BIN / "dagster"), "asset", "materialize", "-f", str(home.parent / "sleepy.py"), "--select", "sleepy"],
        env=env,
        cwd=home.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with instance_at(home) as instance:
            run = wait_for("the CLI run's step to start", lambda: step_started(instance))
            assert run_pid(instance, run) == cli.pid  # in-process: the CLI is the run's process
            assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
            monitor(instance)  # alive: left alone
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

            cli.send_signal(signal.SIGKILL)
            cli.wait(timeout=30)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED  # what stayed forever
            monitor(instance)
            assert_failed_for_dead_worker(instance, run.run_id, cli.pid)

            # Its claim on the gpu pool would block every later `pool="gpu"` step; freed once the run has ended
            # free_slots_after_run_end_seconds ago.
            freed_after = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
            assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
            clock_at(slot_monitoring, freed_after + 5, monkeypatch)
            monitor(instance)
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)


@pytest.mark.slow
def test_killed_run_worker_and_code_server_is_marked_failed(home):
    """A run launched through the instance's run launcher (DefaultRunLauncher -> code server -> run worker). A code
    server fails its own dead workers, so both are killed, as when `dagster dev` or the machine's OOM killer ends
    them together."""
    target = PythonFileTarget(
        python_file=str(home.parent / "sleepy.py"),
        attribute=None,
        working_directory=str(home.parent),
        location_name="sleepy",
    )
    pids: list[int] = []
    with instance_at(home) as instance:
        assert isinstance(instance.run_launcher, LocalProcessRunLauncher)
        try:
            with WorkspaceProcessContext(instance, target) as context:
                workspace = context.create_request_context()
                job = workspace.get_code_location("sleepy").get_repository("__repository__").get_full_job("sleepy_job")
                run = create_run_for_test(
                    instance,
                    job_name="sleepy_job",
                    remote_job_origin=job.get_remote_origin(),
                    job_code_origin=job.get_python_origin(),
                )
                instance.launch_run(run.run_id, workspace)
                wait_for("the launched run's step to start", lambda: step_started(instance))
                worker = run_pid(instance, run)
                server = parent_pid(worker)
                pids += [worker, server]
                assert worker != os.getpid() and server != os.getpid()
                monitor(instance)
                assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
                kill(server)
                kill(worker)
                wait_for("the worker to die", lambda: process_start_time(worker) is None, timeout=30)
                monitor(instance)
                assert_failed_for_dead_worker(instance, run.run_id, worker)
        finally:
            for pid in pids:
                kill(pid)
    assert all(process_start_time(pid) is None for pid in pids), "a killed process is still running"


def _stuck_run(instance: dg.DagsterInstance, event_type: dg.DagsterEventType) -> dg.DagsterRun:
    run = create_run_for_test(instance, job_name="sleepy_job")
    instance.report_dagster_event(dg.DagsterEvent(event_type.value, job_name="sleepy_job"), run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


def test_run_stuck_starting_fails_after_the_start_timeout(home, monkeypatch):
    """A launch whose worker never reached RUN_START (killed while it imported the code)."""
    with instance_at(home) as instance:
        timeout = instance.run_monitoring_start_timeout_seconds
        run = _stuck_run(instance, dg.DagsterEventType.RUN_STARTING)
        assert run.status == dg.DagsterRunStatus.STARTING
        clock_at(run_monitoring, timeout - 5, monkeypatch)
        monitor(instance)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING
        clock_at(run_monitoring, timeout + 5, monkeypatch)
        monitor(instance)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert any(f"longer than {timeout} seconds to start" in e.message for e in instance.all_logs(run.run_id))


def test_run_stuck_canceling_is_canceled_after_the_cancel_timeout(home, monkeypatch):
    with instance_at(home) as instance:
        timeout = instance.run_monitoring_cancel_timeout_seconds
        run = _stuck_run(instance, dg.DagsterEventType.RUN_CANCELING)
        assert run.status == dg.DagsterRunStatus.CANCELING
        now = time.time()
        monkeypatch.setattr(
            run_monitoring, "time", type("Clock", (), {"time": staticmethod(lambda: now + timeout + 5)})
        )
        monitor(instance)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED


def test_worker_gone_tells_live_dead_zombie_and_reused_pids_apart():
    assert worker_gone(os.getpid(), time.time()) is None
    # a pid whose process started after the run reported it: reused, the worker is gone
    started = process_start_time(os.getpid())
    assert "now belongs to a process started" in worker_gone(os.getpid(), started - 60)
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert worker_gone(child.pid, time.time()) is None
        child.kill()
        wait_for("the child to become a zombie", lambda: process_start_time(child.pid) is None, timeout=10)
        assert "no longer exists" in worker_gone(child.pid, time.time())  # killed, not reaped yet
    finally:
        child.kill()
        child.wait()
    assert "no longer exists" in worker_gone(child.pid, time.time())


def test_runs_this_machine_cannot_see_are_not_failed(home):
    """deploy/dagster.yaml (single_machine false): a CLI run from another machine or container, or a run on a remote
    code server, has a pid that means nothing here; only code servers on this machine are checked."""
    with instance_at(home) as instance:
        launcher = LocalProcessRunLauncher(single_machine=False)
        launcher.register_instance(instance)
        dead = subprocess.Popen(["true"])
        dead.wait()
        for tags in ({}, {GRPC_INFO_TAG: '{"host": "user-code.metaclip.svc", "port": 3030}'}):
            run = create_run_for_test(instance, job_name="sleepy_job", tags=tags)
            instance.report_engine_event("Started process for run", run, EngineEventData.in_process(dead.pid))
            result = launcher.check_run_worker_health(run)
            assert result.status.value == "RUNNING" and "not checked" in result.msg
        local = create_run_for_test(instance, job_name="sleepy_job", tags={GRPC_INFO_TAG: '{"host": "localhost"}'})
        instance.report_engine_event("Started process for run", local, EngineEventData.in_process(dead.pid))
        assert launcher.check_run_worker_health(local).status.value == "FAILED"


def test_shipped_configs_agree():
    """Embedded default, production instance and Helm values carry the same timeouts; cancel outlasts training's
    checkpoint grace after SIGTERM, so a cancel that is still writing a checkpoint is not cut short."""
    embedded = yaml.safe_load(EMBEDDED.read_text())
    production = yaml.safe_load(PRODUCTION.read_text())
    helm = yaml.safe_load(HELM_VALUES.read_text())["dagsterDaemon"]["runMonitoring"]
    for config in (embedded, production):
        assert config["run_launcher"]["module"] == "metaclip_assets.defs.run_launcher"
        assert config["run_launcher"]["class"] == LocalProcessRunLauncher.__name__
        assert config["run_monitoring"]["enabled"] is True
    assert embedded["run_launcher"]["config"]["single_machine"] is True
    assert production["run_launcher"]["config"]["single_machine"] is False
    monitoring = embedded["run_monitoring"]
    for key in (
        "start_timeout_seconds",
        "cancel_timeout_seconds",
        "max_resume_run_attempts",
        "free_slots_after_run_end_seconds",
        "poll_interval_seconds",
    ):
        assert production["run_monitoring"][key] == monitoring[key], key
    assert helm["enabled"] is True and helm["pollIntervalSeconds"] == monitoring["poll_interval_seconds"]
    assert helm["cancelTimeoutSeconds"] == monitoring["cancel_timeout_seconds"]
    assert helm["freeSlotsAfterRunEndSeconds"] == monitoring["free_slots_after_run_end_seconds"]
    assert helm["maxResumeRunAttempts"] == monitoring["max_resume_run_attempts"] == 0
    assert helm["startTimeoutSeconds"] >= monitoring["start_timeout_seconds"]  # + pod scheduling and image pull
    assert monitoring["cancel_timeout_seconds"] > TrainingLauncher().termination_grace_period_s
