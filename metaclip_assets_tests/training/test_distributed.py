"""Data-parallel training under torchrun, for real: 2 CPU processes (gloo) on toy shards.

- the same weights on both ranks after every step, and the same as one process on the whole batch (2 x B/2 = 1 x B);
- ranks read disjoint samples;
- the sample's own acceptance: `torchrun --standalone --nproc_per_node 2 -m metaclip_assets.training --config ...`
  finishes with world_size 2 and the global batch recorded, one MLflow run (rank 0 only), an open_clip checkpoint;
- a rank killed with SIGKILL fails the job with torchrun's error naming it, and the re-run resumes from the last
  checkpoint, with the same or another world size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metaclip_assets.training import checkpoint, data
from metaclip_assets.training.toy_data import make_toy_shards
from metaclip_assets_tests.training.test_training import assert_open_clip_loads

pytestmark = pytest.mark.slow
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    make_toy_shards(root / "shards" / "S1", n_shards=4, per_shard=48, seed=1)
    return root


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_config(root: Path, name: str, **kw) -> Path:
    cfg = {
        "snapshot": "S1",
        "output_dir": str(root / "runs" / name),
        "shard_root": str(root / "shards"),
        "data_root": str(root),
        "batch_size": 16,
        "samples_budget": 16 * 2 * 8,
        "lr": 1e-3,
        "threads": 1,
        "log_every": 2,
        "checkpoint_every": 2,
        "shuffle_buffer": 50,
        "progress_every_s": 0,
        **kw,
    }
    path = root / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())


def probe(root: Path, name: str, nproc: int, global_batch: int = 16, steps: int = 3) -> list[dict]:
    out = root / "probe" / name
    out.mkdir(parents=True)
    config = write_config(
        root, name, batch_size=global_batch // nproc, samples_budget=global_batch * steps, tracking_uri="none"
    )
    args = ["-m", "metaclip_assets_tests.training._ddp_probe", str(config), str(out), str(global_batch), str(steps)]
    done = run([*TORCHRUN, f"--nproc_per_node={nproc}", *args] if nproc > 1 else [sys.executable, *args])
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nproc)]


def test_two_ranks_hold_the_same_weights_as_each_other_and_as_one_process(shards):
    one = probe(shards, "one", nproc=1)[0]
    r0, r1 = probe(shards, "two", nproc=2)
    assert [r["step"] for r in r0["records"]] == [1, 2, 3]
    for a, b, ref in zip(r0["records"], r1["records"], one["records"]):
        assert torch.equal(a["params"], b["params"]), f"ranks differ after step {a['step']}"
        # float sums over up to 3M weights, reduced in another order: equal to ~1e-5 (a wrong loss or a missing
        # gradient sync is off by orders of magnitude more)
        assert torch.allclose(a["params"], ref["params"], rtol=1e-4, atol=1e-4), f"2 x B/2 != 1 x B at {a['step']}"
    # the loss each rank logs is the global batch's: the 1-process loss of the same samples
    assert r0["result"]["first_loss"] == pytest.approx(one["result"]["first_loss"], abs=1e-5)
    assert r0["result"]["first_loss"] == r1["result"]["first_loss"]
    assert r0["result"]["world_size"] == 2 and r0["result"]["global_batch"] == 16
    assert r0["result"]["batch_size_per_rank"] == 8


def test_ranks_read_disjoint_samples(shards):
    urls = data.snapshot_shards(str(shards / "shards"), "S1")

    def keys(rank: int, world: int, n: int = 150) -> set[str]:
        stream = iter(data.samples(urls, seed=0, shuffle_buffer=10, rank=rank, world_size=world))
        return {next(stream)["__key__"] for _ in range(n)}

    assert keys(0, 2).isdisjoint(keys(1, 2))  # 4 shards: two each
    # more ranks than shards: every rank reads all shards and keeps the samples whose key hashes to it
    by_rank = [keys(r, 6, 60) for r in range(6)]
    assert all(a.isdisjoint(b) for i, a in enumerate(by_rank) for b in by_rank[i + 1 :])


def test_torchrun_acceptance_run_records_world_size_and_loads_in_open_clip(shards):
    """Default tracking (the sqlite MLflow store under the data root): only rank 0 creates and writes it."""
    config = write_config(shards, "acceptance")
    done = run([*TORCHRUN, "--nproc_per_node=2", "-m", "metaclip_assets.training", "--config", str(config)])
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout[done.stdout.index("{\n") :])  # rank 0 alone prints it
    assert result["world_size"] == 2 and result["global_batch"] == 32 and result["steps"] == 8
    assert result["samples_seen"] == 256 and result["mlflow_run_id"]
    assert done.stdout.count('"world_size"') == 1  # the other rank printed nothing
    assert (Path(result["checkpoint_path"]).parent / "logs" / "rank-1.log").exists()  # it logs to its own file
    state = checkpoint.load(result["checkpoint_path"])
    assert state["world_size"] == 2 and state["global_batch"] == 32
    assert_open_clip_loads(Path(result["checkpoint_path"]), state["state_dict"])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{shards}/mlflow/mlflow.db")
    run_ = client.get_run(result["mlflow_run_id"])
    assert run_.data.params["world_size"] == "2" and run_.data.params["global_batch"] == "32"
    assert len(client.search_runs([run_.info.experiment_id])) == 1


def worker_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of torchrun's workers (children of its agent), read from their environment."""
    found = {}
    for child in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = next((int(e.split(b"=")[1]) for e in environ if e.startswith(b"RANK=")), None)
        if rank is not None:
            found[rank] = int(child)
    return found


def test_a_killed_rank_fails_the_job_and_the_rerun_resumes_with_any_world_size(shards):
    config = write_config(shards, "killed", samples_budget=16 * 2 * 40, checkpoint_every=4, log_every=1)
    out = shards / "runs" / "killed"
    cmd = [*TORCHRUN, "--nproc_per_node=2", "-m", "metaclip_assets.training", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 180
        while not (out / checkpoint.LATEST).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
            time.sleep(0.2)
        os.kill(worker_pids(proc.pid)[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "rank      : 1" in stderr and "Signal 9 (SIGKILL)" in stderr, stderr[-3000:]
    killed_at = checkpoint.load(out / checkpoint.LATEST)["step"]
    assert killed_at >= 4 and not (out / checkpoint.FINAL).exists()

    # the re-run in ONE process resumes from the 2-rank checkpoint: the budget is in samples
    done = run([sys.executable, "-m", "metaclip_assets.training", "--config", str(config)])
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout[done.stdout.index("{\n") :])
    assert result["resumed_from_step"] == killed_at * 2  # twice the steps at half the global batch
    assert result["samples_seen"] == 16 * 2 * 40 and result["world_size"] == 1
    assert not list(out.rglob(".*tmp*"))


def test_clip_checkpoint_asset_trains_with_two_local_processes_and_rank_0_reports(tmp_path):
    """The asset through Dagster Pipes, `local_processes: 2`: torchrun under PipesSubprocessClient; rank 0 alone
    opens the Pipes channel, so exactly one materialization and one check arrive, with world_size 2."""
    from metaclip_assets.definitions import training_assets
    from metaclip_assets.defs.launcher import TrainingLauncher
    from metaclip_assets_tests import conftest as helpers

    snapshot = "CC-MAIN-2024-10"
    make_toy_shards(tmp_path / "shards" / snapshot, n_shards=2, per_shard=48, seed=3)
    launcher = TrainingLauncher(mode="local", local_processes=2, env={"OMP_NUM_THREADS": "1"})
    config = {"batch_size": 8, "samples_budget": 8 * 2 * 6, "threads": 1, "log_every": 2, "tracking_uri": "none"}
    with helpers.snapshot_instance(snapshot) as instance:
        result = helpers.materialize(
            training_assets,
            ["clip_checkpoint"],
            snapshot,
            {"ops": {"clip_checkpoint": {"config": {k: v for k, v in config.items() if k != "tracking_uri"}}}},
            instance=instance,
            resources=helpers.storage_resources(tmp_path, training_launcher=launcher),
        )
    (materialization,) = result.asset_materializations_for_node("clip_checkpoint")
    md = {k: v.value for k, v in materialization.metadata.items()}
    assert md["steps"] == 6 and md["samples_seen"] == 96 and md["world_size"] == 2 and md["global_batch"] == 16
    assert len(result.get_asset_check_evaluations()) == 1
    state = checkpoint.load(md["checkpoint_path"])
    assert state["world_size"] == 2
