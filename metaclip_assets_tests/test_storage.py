"""Names are not paths, and files are readable (issue 16, holes 1, 6 and 7): snapshot ids and storage keys cannot
leave the data root, atomic writes respect the umask, and a killed writer's temp file is removed by the next write.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from metaclip_assets import layout
from metaclip_assets.storage import Storage, remove_stale_temps

HOSTILE = ["../../escape", "..", "", "a|b", "a\nb", "CC-MAIN-2024-10\n", "a b", "a/b", ".hidden", "-rf", "x" * 65]


@pytest.mark.parametrize("name", HOSTILE)
def test_layout_refuses_every_hostile_snapshot_id_with_the_pattern(name):
    with pytest.raises(ValueError, match=r"CC-MAIN-YYYY-WW .*\[A-Za-z0-9\]"):
        layout.pool_key(name, 0, 4)
    with pytest.raises(ValueError):
        layout.training_run_dir("metaclip", "tiny-clip", name)


@pytest.mark.parametrize("name", ["CC-MAIN-2024-10", "SAMPLE-2024-10", "S1", "my_crawl-2"])
def test_layout_accepts_commoncrawl_and_custom_ids(name):
    assert layout.snapshot_id(name) == name and name in layout.datacard_dir(name, 4, 4)


@pytest.mark.parametrize("name", ["..", "../x", "a/b", ""])
def test_experiment_and_model_names_are_one_folder(name):
    with pytest.raises(ValueError, match="experiment"):
        layout.evaluation_dir(name, "tiny-clip", "S1")
    with pytest.raises(ValueError, match="model"):
        layout.export_dir("metaclip", name, "S1")


@pytest.mark.parametrize("key", ["../x", "a/../../x", "a/../..", "/../x", "a/\0b"])
def test_storage_refuses_keys_that_leave_the_root(tmp_path, key):
    storage = Storage(tmp_path / "root")
    with pytest.raises(ValueError, match="leaves the data root"):
        storage.write_text(key, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["root"])


def test_storage_keeps_plain_keys_inside(tmp_path):
    storage = Storage(tmp_path)
    assert storage.path("/a/b.json") == f"{tmp_path.resolve()}/a/b.json"  # a leading slash is still relative
    assert storage.path("a/./b..c/d") == f"{tmp_path.resolve()}/a/./b..c/d"  # `..` only as a whole component


@pytest.mark.parametrize("argv", [["make-sample", "--snapshot"], ["register-snapshot"]])
@pytest.mark.parametrize("name", ["../../escape", "a|b", ""])
def test_cli_refuses_hostile_snapshot_names_before_writing(tmp_path, argv, name):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "METACLIP_DATA_ROOT": str(tmp_path / "data")}
    (tmp_path / "home").mkdir()
    cmd = [sys.executable, "-m", "metaclip_assets.cli", *argv, name]
    if argv[0] == "make-sample":
        cmd += ["--data-root", str(tmp_path / "data")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "invalid snapshot id" in done.stderr and "CC-MAIN-YYYY-WW" in done.stderr
    assert not (tmp_path / "data").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = Path(Storage(tmp_path).write_text("a/b.json", "{}"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600: the training pod reads it
        os.umask(0o027)
        path = Path(Storage(tmp_path).write_text("a/c.json", "{}"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_metadata_json_respects_the_umask(tmp_path):
    from metaclip_assets.metadata.entries import write_metadata_json

    old = os.umask(0o022)
    try:
        write_metadata_json(["cat", "dog"], tmp_path / "metadata.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metadata.json").stat().st_mode) == 0o644


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    storage = Storage(tmp_path)
    # a writer killed with SIGKILL between creating its temp file and renaming it
    code = (
        "import os, sys\n"
        "from metaclip_assets.storage import Storage\n"
        f"with Storage({str(tmp_path)!r}).atomic_write('pool/x.parquet') as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == -9
    leftovers = list((tmp_path / "pool").glob(".tmp-*"))
    assert len(leftovers) == 1
    live = tmp_path / "pool" / f".tmp-{os.getpid()}-abc-x.parquet"  # this (live) process's: not touched
    live.write_bytes(b"mine")
    other = tmp_path / "pool" / ".tmp-1-abc-y.parquet"  # another target's: not touched
    other.write_bytes(b"y")

    storage.write_bytes("pool/x.parquet", b"whole")
    assert (tmp_path / "pool" / "x.parquet").read_bytes() == b"whole"
    assert not leftovers[0].exists() and live.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "pool", "x.parquet") == 0


def test_checkpoint_saves_clear_a_killed_savers_temp_file(tmp_path):
    from metaclip_assets.training import checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".final.pt.tmp-{int(dead.stdout)}"
    leftover.write_bytes(b"half a checkpoint")
    checkpoint.save_atomic({"step": 1}, tmp_path / "final.pt")
    assert not leftover.exists() and checkpoint.load(tmp_path / "final.pt")["step"] == 1
    assert stat.S_IMODE((tmp_path / "final.pt").stat().st_mode) == 0o666 & ~_current_umask()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_training_refuses_a_url_output_dir_instead_of_writing_a_local_s3_folder(tmp_path):
    from metaclip_assets.training.config import TrainConfig

    with pytest.raises(ValueError, match="training_launcher.data_root"):
        TrainConfig(snapshot="S1", output_dir="s3://bucket/root/training/x")
