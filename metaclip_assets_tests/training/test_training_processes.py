"""Training as separate processes: a training process killed mid-way, then resumed by re-materializing the
clip_checkpoint asset, which launches it through Dagster Pipes and logs to a real `mlflow server` on 127.0.0.1.

The MLflow server (10-25 s to come up) is started by a module fixture before the first training subprocess, so it
boots on the second core meanwhile.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from metaclip_assets import layout
from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.training_assets import ClipTrainingConfig, clip_checkpoint
from metaclip_assets.settings import num_buckets, num_shards
from metaclip_assets.storage import Storage
from metaclip_assets.training import checkpoint
from metaclip_assets.training.config import TrainConfig
from metaclip_assets.training.plan import plan_training, train_config_for
from metaclip_assets.training.toy_data import make_toy_shards
from metaclip_assets_tests.conftest import materialize, snapshot_instance, storage_resources

REPO = Path(__file__).resolve().parents[2]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CHILD_ENV.pop("MLFLOW_TRACKING_URI", None)
CHILD_ENV.pop("DAGSTER_PIPES_CONTEXT", None)


class MlflowServer:
    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "mlflow-server.log", "wb")
        mlflow = Path(sys.executable).parent / "mlflow"
        # One worker and no job runner: up in ~12 s instead of 22-50 s (platform notes, section 7).
        self.proc = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root}/mlflow.db",
                "--default-artifact-root",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env={**CHILD_ENV, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mlflow server exited: {Path(self.log.name).read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server not healthy after {timeout} s")

    def stop(self) -> None:
        # The whole process group: SIGTERM to the `mlflow` PID alone leaves its workers behind.
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_toy_shards(root / "shards" / "CC-MAIN-2024-10", n_shards=2, per_shard=64, seed=3)
    return root


def test_asset_config_orders_snapshots_and_warm_starts_from_previous():
    cfg = train_config_for(
        ClipTrainingConfig().model_dump(),
        "CC-MAIN-2024-18",
        ["CC-MAIN-2024-22", "CC-MAIN-2024-18", "CC-MAIN-2023-50", "CC-MAIN-2024-10"],
        "/data",
    )
    assert cfg["earlier_snapshots"] == ["CC-MAIN-2023-50", "CC-MAIN-2024-10"]
    assert cfg["warm_start_from"] == "/data/training/metaclip/tiny-clip/CC-MAIN-2024-10/final.pt"
    assert cfg["output_dir"] == "/data/training/metaclip/tiny-clip/CC-MAIN-2024-18"
    assert (
        cfg["shard_root"] == "/data/shards"
        and cfg["data_card_paths"][0]
        == f"/data/{layout.datacard_key('CC-MAIN-2024-18', num_shards(), num_buckets(), 'datacard.json')}"
    )
    assert (
        train_config_for(
            ClipTrainingConfig(strategy="from_scratch").model_dump(),
            "CC-MAIN-2024-18",
            ["CC-MAIN-2024-10", "CC-MAIN-2024-18"],
            "/data",
        )["warm_start_from"]
        is None
    )
    assert (
        train_config_for(ClipTrainingConfig().model_dump(), "CC-MAIN-2024-10", ["CC-MAIN-2024-10"], "/d")[
            "warm_start_from"
        ]
        is None
    )
    TrainConfig.from_dict(cfg)  # every key the asset sends is a training config field


@pytest.mark.slow
def test_killed_training_resumes_when_asset_is_rematerialized(mlflow_server, data_root, tmp_path):
    """Kill a training process after its first periodic checkpoint; re-materializing the asset (through Pipes,
    logging to the MLflow server) resumes at that step, finishes, and reports metadata and the check."""
    snapshot = "CC-MAIN-2024-10"
    asset_config = {
        "batch_size": 16,
        "samples_budget": 16 * 30,
        "checkpoint_every": 5,
        "log_every": 5,
        "threads": 1,
        "experiment": "metaclip-test",
    }
    # Exactly what the asset will send, launched by hand first (without MLflow; that is not part of the identity).
    train_config = plan_training(
        Storage(data_root), ClipTrainingConfig(**asset_config).model_dump(), snapshot, [snapshot], str(data_root)
    ).train_config  # the versioned run dir the asset will pick
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(train_config))
    out = Path(train_config["output_dir"])
    latest = out / checkpoint.LATEST

    first = subprocess.Popen(
        [sys.executable, "-m", "metaclip_assets.training", "--config", str(cfg_file), "--set", "tracking_uri=none"],
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not latest.exists():
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no periodic checkpoint within 120 s"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # a crash: no handler runs, nothing is flushed
    first.wait(30)
    assert first.returncode == -signal.SIGKILL
    killed_at = checkpoint.load(latest)["step"]
    assert killed_at % 5 == 0 and 5 <= killed_at < 30
    assert not (out / checkpoint.FINAL).exists()

    mlflow_server.wait_ready()
    launcher = TrainingLauncher(env={"MLFLOW_TRACKING_URI": mlflow_server.url, "OMP_NUM_THREADS": "1"})
    with snapshot_instance(snapshot) as instance:
        result = materialize(
            [clip_checkpoint],
            partition_key=snapshot,
            instance=instance,
            resources=storage_resources(data_root, training_launcher=launcher),
            run_config={"ops": {"clip_checkpoint": {"config": asset_config}}},
        )
    assert result.success
    md = result.asset_materializations_for_node("clip_checkpoint")[0].metadata
    assert md["resumed_from_step"].value == killed_at
    assert md["samples_seen"].value == 480 and md["steps"].value == 30 and md["launcher"].value == "local"
    assert md["final_loss"].value > 0 and md["samples_per_s"].value > 0
    assert Path(md["checkpoint_path"].path) == out / checkpoint.FINAL
    assert checkpoint.load(out / checkpoint.FINAL)["step"] == 30 and not latest.exists()
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # rows the killed process wrote after its checkpoint were replaced
    assert not list(latest.parent.glob(".*tmp*"))
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "loss_finite" and check.passed

    # The run is on the server: REST API, not the client library.
    run_id = md["mlflow_run_id"].value
    experiment_id = mlflow_server.get("/api/2.0/mlflow/experiments/get-by-name?experiment_name=metaclip-test")[
        "experiment"
    ]["experiment_id"]
    assert md["mlflow_run_url"].url == f"{mlflow_server.url}/#/experiments/{experiment_id}/runs/{run_id}"
    run = mlflow_server.get(f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
    assert run["info"]["status"] == "FINISHED" and run["info"]["experiment_id"] == experiment_id
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["snapshot"] == snapshot and params["model"] == "tiny-clip" and params["shards_current"] == "2"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert {"loss", "lr", "samples_per_s", "final_loss"} <= set(metrics)
    assert metrics["final_loss"] == pytest.approx(md["final_loss"].value)
