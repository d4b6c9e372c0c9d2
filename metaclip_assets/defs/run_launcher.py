"""Run launcher for instances whose runs are processes on this machine (the embedded default, a single-VM
deploy/dagster.yaml): Dagster's DefaultRunLauncher plus the worker health check that run monitoring needs.

Without it the monitoring daemon cannot tell that a run's process died: DefaultRunLauncher has no
`check_run_worker_health`, a code server fails a dead run worker only while the code server itself lives, and a run
executed by `dagster asset materialize` has no code server at all. So a kill -9 (or the OOM killer, or a reboot) left
the run STARTED forever. Every run's own process reports its pid in the run's first engine event that carries a
`pid` ("Started process for run (pid: N)" from a code server's run worker, "Executing steps ... (pid: N)" from
an in-process run); the run is alive while that pid is a process that started before that event.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData

# /proc/stat's btime is whole seconds and the wall clock may be nudged: a pid reused this soon after its run reported
# it counts as alive (the safe side: the run stays STARTED rather than failing a live run).
CLOCK_SLACK_S = 2.0
# The run's own process reports its pid in its first engine events; step subprocesses report theirs later.
FIRST_ENGINE_EVENTS = 20
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def process_start_time(pid: int) -> float | None:
    """Wall-clock start of process `pid` from /proc (None if there is no such live process here). A zombie (killed,
    not yet reaped) counts as gone. Raises OSError where /proc cannot say (not Linux, or hidden by hidepid)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    started_ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
    with open("/proc/stat") as f:
        boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + started_ticks / os.sysconf("SC_CLK_TCK")


def worker_gone(pid: int, reported_at: float) -> str | None:
    """Why the process that reported `pid` at `reported_at` (time.time()) is gone, or None while it runs."""
    try:
        started = process_start_time(pid)
    except OSError:
        # /proc hides it (another user's process under hidepid): ask the kernel whether the pid exists at all.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"run worker process {pid} no longer exists"
        except PermissionError:
            pass
        return None
    if started is None:
        return f"run worker process {pid} no longer exists (killed, or this machine restarted)"
    if started > reported_at + CLOCK_SLACK_S:
        return (
            f"run worker process {pid} no longer exists: pid {pid} now belongs to a process started "
            f"{started - reported_at:.0f} s after the worker reported it"
        )
    return None


def _grpc_target_is_local(tags: Mapping[str, str]) -> bool | None:
    """Whether the code server a launcher sent the run to is on this machine (None: not launched by a launcher)."""
    if GRPC_INFO_TAG not in tags:
        return None
    info = json.loads(tags[GRPC_INFO_TAG])
    return bool(info.get("socket")) or info.get("host") in LOOPBACK_HOSTS


class LocalProcessRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher that tells run monitoring whether a run's process is still alive on this machine.

    Checked: runs this instance's launcher sent to a code server on this machine (unix socket or loopback: the
    `python_module` code servers that `dagster dev` and `dagster-daemon run` start); with `single_machine: true`
    also runs with no code server (`dagster asset materialize`, Python `materialize()`), which then must all run on
    this machine. Not checked (reported RUNNING, left to the code server's own check and the timeouts): runs on a
    remote code server, whose pids mean nothing here.
    """

    def __init__(self, inst_data: ConfigurableClassData | None = None, single_machine: bool = False):
        self.single_machine = single_machine
        super().__init__(inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {
            "single_machine": dg.Field(
                bool,
                is_required=False,
                default_value=False,
                description="Every run of this instance runs on this machine, in this process namespace (the "
                "embedded sqlite instance): runs without a code server (`dagster asset materialize`) are checked "
                "too. Leave false where CLI runs may come from other machines or containers.",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, single_machine=config_value.get("single_machine", False))

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def run_process(self, run: dg.DagsterRun) -> tuple[int, float] | None:
        """(pid, time reported) of the run's own process: the first engine event with a `pid`."""
        events = self._instance.event_log_storage.get_logs_for_run(
            run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=FIRST_ENGINE_EVENTS
        )
        for entry in events:
            pid = entry.dagster_event.engine_event_data.metadata.get("pid") if entry.dagster_event else None
            if pid is not None and str(pid.value).isdigit():
                return int(pid.value), entry.timestamp
        return None

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        local = _grpc_target_is_local(run.tags)
        if local is False or (local is None and not self.single_machine):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker may be on another machine: not checked")
        found = self.run_process(run)
        if found is None:  # between RUN_START and the executor's first event
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker has not reported its pid yet")
        pid, reported_at = found
        gone = worker_gone(pid, reported_at)
        if gone:
            msg = f"{gone}; materialize the run's assets again to redo it"
            return CheckRunHealthResult(WorkerStatus.FAILED, msg, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive", run_worker_id=str(pid))
