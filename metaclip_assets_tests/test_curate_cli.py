"""`metaclip-assets curate`: the whole curation of a snapshot in one command, through Dagster.

One subprocess runs the command as a user would (temp DAGSTER_HOME and data root, --register, the sample's
metadata settings); its curated set must equal the asset-by-asset path's (one `dg.materialize` per shard, as in
test_curation_assets), with one run per step whatever the shard count. The error paths and --launch run in this
process (`cli.main`), which costs no extra Dagster start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from metaclip_assets import cli
from metaclip_assets.curation.steps import read_curated
from metaclip_assets.definitions import curation_assets, defs
from metaclip_assets.defs import curate
from metaclip_assets.defs.partitions import NUM_BUCKETS, NUM_SHARDS, SNAPSHOT_PARTITIONS_NAME, one_run_per_range
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.storage import Storage
from metaclip_assets_tests.conftest import (
    SAMPLE_METADATA_CONFIG,
    materialize,
    materialize_shards,
    snapshot_instance,
    storage_resources,
)

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAPSHOT = "SAMPLE-2024-10"
T = 30
STEPS = ["metadata_entries", "crawl_pool", "matched_pool", "entry_counts", "balanced_subset", "data_card"]


def _home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path


def _curated(root: Path) -> pl.DataFrame:
    return pl.concat(read_curated(Storage(root), SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)).sort("pair_id")


@pytest.fixture(scope="module")
def by_command(tmp_path_factory):
    """`metaclip-assets curate` in a subprocess, with the shard count of this test process (so the outputs are
    comparable file for file) given by --shards rather than the environment."""
    home, data = _home(tmp_path_factory.mktemp("home")), tmp_path_factory.mktemp("data")
    make_sample_snapshot(data, SNAPSHOT, seed=0)
    env = {**os.environ, "DAGSTER_HOME": str(home), "METACLIP_DATA_ROOT": str(data), "PYTHONWARNINGS": "ignore"}
    env.pop("METACLIP_NUM_SHARDS", None)
    args = [str(BIN / "metaclip-assets"), "curate", SNAPSHOT, "--register", "--shards", str(NUM_SHARDS)]
    args += ["--buckets", str(NUM_BUCKETS), "--t", str(T), "--metadata-config", "scripts/sample-metadata-config.json"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return home, data, proc.stdout


@pytest.fixture(scope="module")
def by_asset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_sample_snapshot(root, SNAPSHOT, seed=0)
    with snapshot_instance(SNAPSHOT) as instance:
        kwargs = {"instance": instance, "resources": storage_resources(root)}
        materialize(curation_assets, [curate.METADATA], run_config=SAMPLE_METADATA_CONFIG, **kwargs)
        materialize_shards(curation_assets, list(curate.SHARD_STEPS), SNAPSHOT, **kwargs)
        for asset in curate.SNAPSHOT_STEPS:  # one run per asset, per-shard runs above: no range anywhere
            config = {"ops": {asset: {"config": {"t": T}}}} if asset == "balanced_subset" else None
            materialize(curation_assets, [asset], SNAPSHOT, config, **kwargs)
    return root


def test_curate_gives_the_asset_by_asset_curated_set_in_one_run_per_step(by_command, by_asset):
    home, data, out = by_command
    curated, expected = _curated(data), _curated(by_asset)
    assert len(curated) > 0 and curated.equals(expected)

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == [SNAPSHOT]  # --register
        runs = instance.get_runs()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.tags["metaclip/curate"] == SNAPSHOT for r in runs)
        assert sorted(next(iter(r.asset_selection)).to_user_string() for r in runs) == sorted(STEPS)
        for asset in ("crawl_pool", "matched_pool"):  # every shard from the one run of its step
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
            assert len(records) == NUM_SHARDS and len({r.run_id for r in records}) == 1
    finally:
        instance.dispose()

    # one figure line per step (name, then runs, wall, CPU, peak, pairs, pairs/CPU-s), then the whole command
    rows = {line[:34].split(" (")[0].strip(): line[34:].split() for line in out.splitlines() if len(line) > 34}
    assert set(STEPS) <= set(rows) and "whole command" in rows
    assert all(rows[s][0] == "1" for s in STEPS) and rows["whole command"][0] == "6"
    pool = int(rows["crawl_pool"][4].replace(",", ""))
    assert pool == int(rows["matched_pool"][4].replace(",", "")) == int(rows["whole command"][4].replace(",", ""))
    assert f"curated {len(curated):,} of" in out and f"({pool:,} read) in 6 runs" in out


def test_error_paths_say_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(SystemExit, match="DAGSTER_HOME is not set"):
        cli.main(["curate", SNAPSHOT])
    with pytest.raises(SystemExit) as invalid:
        cli.main(["curate", "../etc"])
    assert invalid.value.code == 2 and "snapshot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["curate", SNAPSHOT, "--shards", "0"])
    assert "expected an integer from 1 to 65536" in capsys.readouterr().err

    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path / "home")))
    monkeypatch.setenv("METACLIP_NUM_SHARDS", str(NUM_SHARDS))  # restored afterwards: --shards sets it
    with pytest.raises(SystemExit, match=f"register-snapshot {SNAPSHOT}` \\(or add --register\\)"):
        cli.main(["curate", SNAPSHOT])
    with pytest.raises(SystemExit, match=f"definitions were loaded with {NUM_SHARDS} shards"):
        cli.main(["curate", SNAPSHOT, "--shards", str(NUM_SHARDS + 1)])  # too late in this process
    with pytest.raises(SystemExit, match="--metadata nope.json: no such file"):
        cli.main(["curate", SNAPSHOT, "--register", "--metadata", "nope.json"])
    with pytest.raises(SystemExit):
        cli.main(["curate", SNAPSHOT, "--metadata-config", "{not json"])
    assert "not a JSON object nor a JSON file" in capsys.readouterr().err


def test_launch_stores_one_backfill_of_every_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path / "home")))
    monkeypatch.setenv("METACLIP_DATA_ROOT", str(tmp_path / "data"))
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps(["cat", "dog"]))
    cli.main(["curate", SNAPSHOT, "--register", "--launch", "--t", "30", "--metadata", str(metadata)])
    assert f"registered {SNAPSHOT}; backfill" in capsys.readouterr().out

    instance = dg.DagsterInstance.get()
    [backfill] = instance.get_backfills()
    assert backfill.status.value == "REQUESTED" and backfill.tags["metaclip/curate"] == SNAPSHOT
    targets = backfill.asset_backfill_data.target_subset
    assert {k.to_user_string() for k in targets.asset_keys} == set(STEPS)
    assert targets.get_partitions_subset(dg.AssetKey("matched_pool")).get_partition_keys() == set(
        curate.shard_keys_of(SNAPSHOT)
    )
    assert targets.get_partitions_subset(dg.AssetKey("data_card")).get_partition_keys() == {SNAPSHOT}
    ops = backfill.run_config["ops"]
    assert ops["balanced_subset"]["config"]["t"] == 30
    assert ops["metadata_entries"]["config"]["metadata_json"] == str(metadata.resolve())
    assert instance.get_runs() == []  # nothing ran here: the daemon launches the runs


def test_runs_follow_the_backfill_policy():
    keys = [f"{s:03d}|{SNAPSHOT}" for s in range(5)]
    # the loaded definitions (METACLIP_BACKFILL=range unless set): all shards in one run
    size = one_run_per_range.max_partitions_per_run or len(keys)
    expected = [keys[i : i + size] for i in range(0, len(keys), size)]
    assert curate.run_batches(defs, "crawl_pool", keys) == expected

    parts = dg.StaticPartitionsDefinition(keys)

    @dg.asset(name="crawl_pool", partitions_def=parts, backfill_policy=dg.BackfillPolicy.multi_run(2))
    def capped() -> None: ...

    assert curate.run_batches(dg.Definitions(assets=[capped]), "crawl_pool", keys) == [keys[:2], keys[2:4], keys[4:]]
