"""The README's CLI commands, run as subprocesses against a temporary DAGSTER_HOME and data root, exactly as CI
would: generate the sample, register its snapshot partition, materialize every curation asset with
`dagster asset materialize` (plain, `shard|snapshot` keys, snapshot keys), then read the instance back.

Each Dagster CLI call costs 5-10 s here (it imports Dagster and loads the code location), so the shard count is 2
(METACLIP_NUM_SHARDS, fixed when the code location loads) and the steps run in the CLI's own process
(`"execution": {"config": {"in_process": {}}}`, the CI form: the default multiprocess executor starts one
process per step, which re-imports everything, and makes a two-step call take ~20 s instead of ~6 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from metaclip_assets import layout
from metaclip_assets.storage import Storage

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAPSHOT = "SAMPLE-2024-10"
M = ["-m", "metaclip_assets.definitions"]
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
pytestmark = pytest.mark.slow


def run(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    data = tmp_path_factory.mktemp("data")
    env = {**os.environ, "DAGSTER_HOME": str(home), "METACLIP_DATA_ROOT": str(data), "METACLIP_NUM_SHARDS": "2",
           "PYTHONWARNINGS": "ignore", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return env, home, data


def test_readme_commands_materialize_the_sample(cli_env):
    env, home, data = cli_env
    out = run(env, "metaclip-assets", "make-sample", "--data-root", str(data), "--snapshot", SNAPSHOT).stdout
    assert f"sample snapshot {SNAPSHOT}" in out and (data / "crawl" / SNAPSHOT).is_dir()
    assert f"registered ['{SNAPSHOT}']" in run(env, "metaclip-assets", "register-snapshot", SNAPSHOT).stdout

    metadata_config = json.loads((REPO / "scripts" / "sample-metadata-config.json").read_text())
    run(env, "dagster", "asset", "materialize", *M, "--select", "metadata_entries",
        "--config-json", json.dumps({**metadata_config, **IN_PROCESS}))
    for shard in ("000", "001"):  # multi-partition keys: dimension values ordered by dimension name
        run(env, "dagster", "asset", "materialize", *M, "--select", "crawl_pool,matched_pool",
            "--partition", f"{shard}|{SNAPSHOT}", "--config-json", json.dumps(IN_PROCESS))
    run(env, "dagster", "asset", "materialize", *M, "--select", "entry_counts,balanced_subset,data_card",
        "--partition", SNAPSHOT,
        "--config-json", json.dumps({"ops": {"balanced_subset": {"config": {"t": 30}}}, **IN_PROCESS}))
    # the key order is part of the interface: snapshot|shard is refused before anything runs
    wrong = run(env, "dagster", "asset", "materialize", *M, "--select", "crawl_pool",
                "--partition", f"{SNAPSHOT}|000", ok=False)
    assert wrong.returncode != 0 and "PartitionsDefinition containing the passed partition key" in wrong.stderr

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        shard_keys = {f"000|{SNAPSHOT}", f"001|{SNAPSHOT}"}
        for asset, partitions in [("crawl_pool", shard_keys), ("matched_pool", shard_keys),
                                  ("entry_counts", {SNAPSHOT}), ("balanced_subset", {SNAPSHOT}),
                                  ("data_card", {SNAPSHOT})]:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == partitions, asset
        assert instance.get_latest_materialization_event(dg.AssetKey("metadata_entries")) is not None
        card = instance.get_latest_materialization_event(dg.AssetKey("data_card")).asset_materialization
        assert card.metadata["t"].value == 30
        assert "data:image/png;base64," in card.metadata["data_card"].value  # the plot, inline in the Markdown
    finally:
        instance.dispose()
    storage = Storage(data)
    assert storage.exists(f"{layout.datacard_dir(SNAPSHOT)}/datacard.md")
    assert storage.exists(layout.pool_key(SNAPSHOT, 1, 2)) and not storage.exists(layout.pool_key(SNAPSHOT, 0, 4))

