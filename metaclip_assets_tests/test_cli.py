"""The README's CLI commands, run as subprocesses against a temporary DAGSTER_HOME and data root, exactly as CI
would: generate the sample, register its snapshot partition, materialize every curation asset with
`dagster asset materialize` (plain, `shard|snapshot` keys, snapshot keys, and partition ranges), then read the
instance back.

Each Dagster CLI call costs 5-10 s here (it imports Dagster and loads the code location), so the shard count is 2
(METACLIP_NUM_SHARDS, fixed when the code location loads) and the steps run in the CLI's own process
(`"execution": {"config": {"in_process": {}}}`, the CI form: the default multiprocess executor starts one
process per step, which re-imports everything, and makes a two-step call take ~20 s instead of ~6 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from metaclip_assets import layout
from metaclip_assets.storage import Storage

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAPSHOT, SNAPSHOT2 = "SAMPLE-2024-10", "SAMPLE-2024-18"
SHARDS = ("000", "001")
M = ["-m", "metaclip_assets.definitions"]
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
BALANCE_T30 = {"ops": {"balanced_subset": {"config": {"t": 30}}}, **IN_PROCESS}
SHARD_ASSETS, SNAPSHOT_ASSETS = ("crawl_pool", "matched_pool"), ("entry_counts", "balanced_subset", "data_card")
pytestmark = pytest.mark.slow


def run(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def materialize(env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(env, "dagster", "asset", "materialize", *M, *args, ok=ok)


def _cli_env(tmp_path_factory, name: str) -> tuple[dict, Path, Path]:
    home = tmp_path_factory.mktemp(f"{name}_dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    data = tmp_path_factory.mktemp(f"{name}_data")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "METACLIP_DATA_ROOT": str(data),
        "METACLIP_NUM_SHARDS": "2",
        "PYTHONWARNINGS": "ignore",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return env, home, data


def _sample_with_metadata(env: dict, data: Path, *snapshots: str) -> None:
    out = run(env, "metaclip-assets", "make-sample", "--data-root", str(data), "--snapshot", *snapshots).stdout
    assert all(f"sample snapshot {s}" in out and (data / "crawl" / s).is_dir() for s in snapshots)
    assert f"registered {list(snapshots)}" in run(env, "metaclip-assets", "register-snapshot", *snapshots).stdout
    metadata_config = json.loads((REPO / "scripts" / "sample-metadata-config.json").read_text())
    materialize(env, "--select", "metadata_entries", "--config-json", json.dumps({**metadata_config, **IN_PROCESS}))


@pytest.fixture(scope="module")
def per_key(tmp_path_factory):
    """The README's per-key commands: one call per shard, one per snapshot."""
    env, home, data = _cli_env(tmp_path_factory, "per_key")
    _sample_with_metadata(env, data, SNAPSHOT)
    for shard in SHARDS:  # multi-partition keys: dimension values ordered by dimension name
        materialize(
            env,
            "--select",
            ",".join(SHARD_ASSETS),
            "--partition",
            f"{shard}|{SNAPSHOT}",
            "--config-json",
            json.dumps(IN_PROCESS),
        )
    materialize(
        env, "--select", ",".join(SNAPSHOT_ASSETS), "--partition", SNAPSHOT, "--config-json", json.dumps(BALANCE_T30)
    )
    # re-balancing: the README's selection of balanced_subset and what follows it in the curation group
    materialize(
        env,
        "--select",
        "key:balanced_subset+ and group:curation",
        "--partition",
        SNAPSHOT,
        "--config-json",
        json.dumps(BALANCE_T30),
    )
    return env, home, data


@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    """The README's range commands over two snapshots: one call for every shard of both, one for both snapshots."""
    env, home, data = _cli_env(tmp_path_factory, "ranged")
    _sample_with_metadata(env, data, SNAPSHOT, SNAPSHOT2)  # SNAPSHOT gets the same seed (0) as in per_key
    # A multi-partition range is the box between its ends: shards 000..001 x snapshots SNAPSHOT..SNAPSHOT2.
    materialize(
        env,
        "--select",
        ",".join(SHARD_ASSETS),
        "--partition-range",
        f"000|{SNAPSHOT}...001|{SNAPSHOT2}",
        "--config-json",
        json.dumps(IN_PROCESS),
    )
    materialize(
        env,
        "--select",
        ",".join(SNAPSHOT_ASSETS),
        "--partition-range",
        f"{SNAPSHOT}...{SNAPSHOT2}",
        "--config-json",
        json.dumps(BALANCE_T30),
    )
    return env, home, data


def _materializations(home: Path, asset: str) -> list[dg.EventLogRecord]:
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        return list(instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)
    finally:
        instance.dispose()


def _by_partition(home: Path, asset: str) -> dict[str, dict]:
    """partition -> metadata values of its latest materialization."""
    out: dict[str, dict] = {}
    for record in sorted(_materializations(home, asset), key=lambda r: r.storage_id):
        mat = record.asset_materialization
        out[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return out


def test_readme_commands_materialize_the_sample(per_key):
    env, home, data = per_key
    # the key order is part of the interface: snapshot|shard is refused before anything runs
    wrong = materialize(env, "--select", "crawl_pool", "--partition", f"{SNAPSHOT}|000", ok=False)
    assert wrong.returncode != 0 and "PartitionsDefinition containing the passed partition key" in wrong.stderr

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        shard_keys = {f"{s}|{SNAPSHOT}" for s in SHARDS}
        expected = [*((a, shard_keys) for a in SHARD_ASSETS), *((a, {SNAPSHOT}) for a in SNAPSHOT_ASSETS)]
        for asset, partitions in expected:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == partitions, asset
        assert instance.get_latest_materialization_event(dg.AssetKey("metadata_entries")) is not None
        card = instance.get_latest_materialization_event(dg.AssetKey("data_card")).asset_materialization
        assert card.metadata["t"].value == 30
        assert "data:image/png;base64," in card.metadata["data_card"].value  # the plot, inline in the Markdown
    finally:
        instance.dispose()
    # the re-balancing selection ran balanced_subset and data_card again, and nothing else
    assert {a: len(_materializations(home, a)) for a in SNAPSHOT_ASSETS} == {
        "entry_counts": 1,
        "balanced_subset": 2,
        "data_card": 2,
    }
    storage = Storage(data)
    assert storage.exists(f"{layout.datacard_dir(SNAPSHOT, 2, 2)}/datacard.md")  # buckets default to the shards
    assert storage.exists(layout.pool_key(SNAPSHOT, 1, 2)) and not storage.exists(layout.pool_key(SNAPSHOT, 0, 4))


def test_partition_range_materializes_each_partition_like_per_key_runs(per_key, ranged):
    _, key_home, key_data = per_key
    _, home, data = ranged
    box = {f"{shard}|{snapshot}" for shard in SHARDS for snapshot in (SNAPSHOT, SNAPSHOT2)}
    expected = [*((a, box) for a in SHARD_ASSETS), *((a, {SNAPSHOT, SNAPSHOT2}) for a in SNAPSHOT_ASSETS)]
    for asset, partitions in expected:
        records = _materializations(home, asset)
        # exactly one materialization per partition of the range, all from the one run of the command
        assert Counter(r.asset_materialization.partition for r in records) == Counter(partitions), asset
        assert len({r.run_id for r in records}) == 1, asset

    for asset in SHARD_ASSETS:  # each shard's own metadata, equal to what the per-key run recorded
        ranged_md, key_md = _by_partition(home, asset), _by_partition(key_home, asset)
        rows = {p: md["dagster/row_count"] for p, md in ranged_md.items()}
        assert len(set(rows.values())) == len(rows), rows  # every partition has its own count
        for shard in SHARDS:
            p = f"{shard}|{SNAPSHOT}"
            assert rows[p] == key_md[p]["dagster/row_count"], (asset, p)
            assert ranged_md[p]["path"].replace(str(data), "") == key_md[p]["path"].replace(str(key_data), "")
    pool_md, key_pool_md = _by_partition(home, "crawl_pool"), _by_partition(key_home, "crawl_pool")
    for shard in SHARDS:
        p = f"{shard}|{SNAPSHOT}"
        assert (pool_md[p]["files"], pool_md[p]["records_read"]) == (
            key_pool_md[p]["files"],
            key_pool_md[p]["records_read"],
        )

    counts, key_counts = _by_partition(home, "entry_counts"), _by_partition(key_home, "entry_counts")
    assert counts[SNAPSHOT]["matched_pairs"] == key_counts[SNAPSHOT]["matched_pairs"]
    assert counts[SNAPSHOT]["matched_pairs"] != counts[SNAPSHOT2]["matched_pairs"]
    # snapshots run oldest first, so the later one's cumulative counts include the earlier one
    assert (counts[SNAPSHOT]["cumulative_snapshots"], counts[SNAPSHOT2]["cumulative_snapshots"]) == (
        [SNAPSHOT],
        [SNAPSHOT, SNAPSHOT2],
    )
    balanced, key_balanced = _by_partition(home, "balanced_subset"), _by_partition(key_home, "balanced_subset")
    assert balanced[SNAPSHOT]["dagster/row_count"] == key_balanced[SNAPSHOT]["dagster/row_count"]
    assert balanced[SNAPSHOT]["dagster/row_count"] != balanced[SNAPSHOT2]["dagster/row_count"]
    cards, key_cards = _by_partition(home, "data_card"), _by_partition(key_home, "data_card")
    assert cards[SNAPSHOT]["funnel"] == key_cards[SNAPSHOT]["funnel"] != cards[SNAPSHOT2]["funnel"]
    assert all(md["t"] == 30 for md in cards.values())

    # the files of SNAPSHOT are byte for byte those of the per-key runs
    files = [
        *(k(SNAPSHOT, s, 2) for s in range(len(SHARDS)) for k in (layout.pool_key, layout.matched_key)),
        *(layout.dedup_bucket_key(SNAPSHOT, 2, 2, b) for b in range(2)),
        layout.counts_key(SNAPSHOT, 2, 2),
        *(layout.balanced_bucket_key(SNAPSHOT, 2, 2, b) for b in range(2)),
        f"{layout.datacard_dir(SNAPSHOT, 2, 2)}/datacard.json",
        f"{layout.datacard_dir(SNAPSHOT, 2, 2)}/datacard.md",
    ]
    ranged_storage, key_storage = Storage(data), Storage(key_data)
    for key in files:
        assert ranged_storage.read_bytes(key) == key_storage.read_bytes(key), key

    # a step emits each check once: one evaluation over the whole range, with every partition's result
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        for asset, check, n in [
            ("crawl_pool", "shard_not_empty", 4),
            ("entry_counts", "counts_sum_to_matches", 2),
            ("balanced_subset", "curated_subset_of_matched", 2),
            ("data_card", "totals_match_parquet", 2),
        ]:
            [evaluation] = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(dg.AssetKey(asset), check), limit=10
            )
            data_ = evaluation.event.dagster_event.event_specific_data
            assert data_.passed and data_.metadata["partitions"].value == n, (asset, check)
            assert len(data_.metadata["by_partition"].value) == n and data_.metadata["failed_partitions"].value == []
    finally:
        instance.dispose()


def test_bad_partition_ranges_are_refused(ranged):
    env, home, _ = ranged
    runs_before = len(_materializations(home, "crawl_pool"))
    # an unregistered snapshot: refused before anything runs
    unknown = materialize(
        env, "--select", "crawl_pool", "--partition-range", f"000|CC-MAIN-1999-01...001|{SNAPSHOT}", ok=False
    )
    assert unknown.returncode != 0
    assert "containing the passed partition key `000|CC-MAIN-1999-01`" in unknown.stderr
    # an unknown end is refused too, though Dagster's message always names the start key
    unknown_end = materialize(
        env, "--select", "crawl_pool", "--partition-range", f"000|{SNAPSHOT}...001|CC-MAIN-1999-01", ok=False
    )
    assert unknown_end.returncode != 0 and "DagsterInvalidSubsetError" in unknown_end.stderr
    # the right keys in the wrong order select nothing: the run fails with the reason instead of doing nothing
    inverted = materialize(
        env,
        "--select",
        "crawl_pool",
        "--partition-range",
        f"001|{SNAPSHOT}...000|{SNAPSHOT}",
        "--config-json",
        json.dumps(IN_PROCESS),
        ok=False,
    )
    assert inverted.returncode != 0
    assert f"partition range 001|{SNAPSHOT}...000|{SNAPSHOT} selects no partition" in inverted.stdout + inverted.stderr
    assert len(_materializations(home, "crawl_pool")) == runs_before


def test_backfill_mode_per_key_runs_every_key_alone_and_refuses_ranges(tmp_path_factory):
    """METACLIP_BACKFILL=per_key (k8s/helm-values.yaml): every curation asset gets one run per key, so backfills
    and automation scale out by shard, and the CLI refuses a range with Dagster's own explanation; a typo in the
    mode stops the code location from loading with a message naming the valid modes."""
    env, _, _ = _cli_env(tmp_path_factory, "per_key")
    probe = (
        "import json; from metaclip_assets.definitions import defs; g = defs.resolve_asset_graph(); "
        "print(json.dumps({k.to_user_string(): [g.get(k).backfill_policy.policy_type.value, "
        "g.get(k).backfill_policy.max_partitions_per_run] for k in g.get_all_asset_keys() "
        "if g.get(k).backfill_policy}))"
    )
    per_key = json.loads(run({**env, "METACLIP_BACKFILL": "per_key"}, "python", "-c", probe).stdout)
    default = json.loads(run(env, "python", "-c", probe).stdout)
    assert set(SHARD_ASSETS + SNAPSHOT_ASSETS) <= set(per_key) == set(default)
    assert all(v == ["MULTI_RUN", 1] for v in per_key.values()), per_key
    assert all(v[0] == "SINGLE_RUN" for v in default.values()), default
    refused = materialize(
        {**env, "METACLIP_BACKFILL": "per_key"},
        "--select",
        "entry_counts",
        "--partition-range",
        f"{SNAPSHOT}...{SNAPSHOT2}",
        ok=False,
    )
    assert refused.returncode != 0 and "BackfillPolicy.single_run()" in refused.stderr
    typo = run({**env, "METACLIP_BACKFILL": "per-shard"}, "python", "-c", probe, ok=False)
    assert typo.returncode != 0 and "METACLIP_BACKFILL='per-shard'" in typo.stderr and "per_key" in typo.stderr
