"""Each asset check must be able to fail: broken inputs or broken stage logic turn it red."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from metaclip_assets.curation import stages, steps
from metaclip_assets.definitions import curation_assets
from metaclip_assets.defs.partitions import shard_partitions
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets_tests.conftest import WORDNET_ONLY, curate, materialize, snapshot_instance, storage_resources

SNAPSHOT = "SAMPLE-2024-18"
BALANCE = {"ops": {"balanced_subset": {"config": {"t": 10}}}}


def _run(instance, resources, selection, partition_key=None, run_config=None):
    return materialize(
        curation_assets,
        selection,
        partition_key,
        run_config,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def _run_range(instance, resources, selection, start, end):
    """What `dagster asset materialize --partition-range start...end` launches: one run, one step per asset."""
    return materialize(
        curation_assets,
        selection,
        instance=instance,
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end},
        raise_on_error=False,
    )


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def small_snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    make_sample_snapshot(root, SNAPSHOT, seed=3, n_wat_files=3, pages_per_file=16)
    resources = storage_resources(root)
    with snapshot_instance(SNAPSHOT) as instance:
        # every step must succeed here (the empty shards' checks only WARN); a failure raises
        results = curate(
            curation_assets, SNAPSHOT, instance=instance, resources=resources, metadata_config=WORDNET_ONLY
        )
        shard_checks = {shard: r.get_asset_check_evaluations() for shard, r in results["shards"].items()}
        yield root, resources, instance, shard_checks


def test_shard_without_files_is_flagged_not_silently_passed(small_snapshot):
    root, _, _, shard_checks = small_snapshot
    files = sorted(p.name for p in (root / "crawl" / SNAPSHOT).iterdir())
    assert len(files) == 4  # 3 WAT + 1 WARC over 4 shards: the fixture relies on at least one empty shard
    evaluations = [e for evs in shard_checks.values() for e in evs]
    empty = [e for e in evaluations if not e.passed]
    assert empty, "a shard with no crawl files must fail shard_not_empty"
    assert all(e.severity == dg.AssetCheckSeverity.WARN for e in empty)
    assert any(e.passed for e in evaluations)


def test_shard_with_only_garbage_fails_with_error(tmp_path):
    crawl = tmp_path / "crawl" / "CC-MAIN-2099-02"
    crawl.mkdir(parents=True)
    for i in range(8):  # enough names that every shard gets a file
        (crawl / f"garbage-{i}.warc.wat.gz").write_bytes(b"this is not gzip at all" * 10)
    resources = storage_resources(tmp_path)
    with snapshot_instance("CC-MAIN-2099-02") as instance:
        result = _run(instance, resources, ["crawl_pool"], {"snapshot": "CC-MAIN-2099-02", "shard": "000"})
        # Bad files never crash the reader: the pool is written and its bad records counted...
        mat = result.asset_materializations_for_node("crawl_pool")[0]
        assert mat.metadata["bad_records_total"].value >= 1
        # ...but an all-bad shard is not silent: the blocking check fails the step, so nothing downstream runs.
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert not result.success

        # Over a range the same holds: every shard's pool is recorded, the one check result fails with ERROR
        # and names the shards, and matched_pool (the next step) never runs.
        keys = [f"{shard}|CC-MAIN-2099-02" for shard in shard_partitions.get_partition_keys()]
        result = _run_range(instance, resources, ["crawl_pool", "matched_pool"], keys[0], keys[-1])
        assert not result.success
        assert sorted(m.partition for m in result.asset_materializations_for_node("crawl_pool")) == keys
        assert not result.asset_materializations_for_node("matched_pool")
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.metadata["failed_partitions"].value == keys


def test_a_range_reports_each_check_once_with_every_partition(small_snapshot):
    """A step emits a check once, so a ranged run gets one result per check: failed if any partition failed,
    WARN unless one failed with ERROR, with each partition's own result in its metadata."""
    _, resources, instance, shard_checks = small_snapshot
    shards = shard_partitions.get_partition_keys()
    empty = {shard for shard, evaluations in shard_checks.items() if not evaluations[0].passed}  # per-key runs
    result = _run_range(instance, resources, ["crawl_pool"], f"{shards[0]}|{SNAPSHOT}", f"{shards[-1]}|{SNAPSHOT}")
    assert result.success  # WARN does not block
    mats = {m.partition: m.metadata for m in result.asset_materializations_for_node("crawl_pool")}
    assert sorted(mats) == [f"{shard}|{SNAPSHOT}" for shard in shards]
    assert len({md["files"].value for md in mats.values()}) > 1  # each shard's own metadata, not one for all
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["failed_partitions"].value == sorted(f"{shard}|{SNAPSHOT}" for shard in empty)
    by_partition = evaluation.metadata["by_partition"].value
    assert {p: r["passed"] for p, r in by_partition.items()} == {f"{s}|{SNAPSHOT}": s not in empty for s in shards}
    for shard, [per_key] in shard_checks.items():  # the same result as the shard's own run
        assert {k: v for k, v in by_partition[f"{shard}|{SNAPSHOT}"].items() if k not in ("passed", "severity")} == {
            k: v.value for k, v in per_key.metadata.items()
        }, shard


def test_snapshot_checks_pass_on_honest_stages(small_snapshot):
    _, resources, instance, _ = small_snapshot
    result = _run(instance, resources, ["entry_counts", "balanced_subset", "data_card"], SNAPSHOT, BALANCE)
    assert result.success
    assert _checks(result) == {
        "counts_sum_to_matches": True,
        "curated_subset_of_matched": True,
        "totals_match_parquet": True,
    }


def test_counts_check_fails_when_counts_are_wrong(small_snapshot, monkeypatch):
    _, resources, instance, _ = small_snapshot

    def off_by_one(matched, n):
        counts = stages.count_entries(matched, n)
        counts[0] += 1
        return counts

    monkeypatch.setattr(steps, "count_entries", off_by_one)
    result = _run(instance, resources, ["entry_counts"], SNAPSHOT)
    assert _checks(result) == {"counts_sum_to_matches": False}


def test_subset_check_fails_when_balancing_invents_a_pair(small_snapshot, monkeypatch):
    _, resources, instance, _ = small_snapshot
    assert _run(instance, resources, ["entry_counts"], SNAPSHOT).success

    def inventive(matched, counts, *, t, seed):
        curated, keep, stats = stages.balance(matched, counts, t=t, seed=seed)
        fake = curated.head(1).with_columns(pl.lit("http://example.invalid/x.jpg").alias("url"))
        return pl.concat([curated, fake]), keep, stats

    monkeypatch.setattr(steps, "balance", inventive)
    result = _run(instance, resources, ["balanced_subset"], SNAPSHOT, BALANCE)
    assert _checks(result) == {"curated_subset_of_matched": False}


def test_datacard_check_fails_when_totals_disagree(small_snapshot, monkeypatch):
    _, resources, instance, _ = small_snapshot
    assert _run(instance, resources, ["entry_counts", "balanced_subset"], SNAPSHOT, BALANCE).success
    real_build = steps.build_datacard

    def miscounting(**kwargs):
        kwargs["funnel"] = {**kwargs["funnel"], "curated_pairs": kwargs["funnel"]["curated_pairs"] + 1}
        return real_build(**kwargs)

    monkeypatch.setattr(steps, "build_datacard", miscounting)
    # The check compares the funnel the written card reports with the parquet files' row counts.
    result = _run(instance, resources, ["data_card"], SNAPSHOT)
    assert _checks(result) == {"totals_match_parquet": False}
