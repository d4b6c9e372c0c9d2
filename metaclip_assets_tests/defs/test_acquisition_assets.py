"""The acquisition assets on the generated sample: curated pairs -> webdataset shards (WARC replay, offline) ->
report, in a real (temporary) Dagster instance. Outcomes are compared with the sample manifest, which records
which image URLs it left out of the images WARC, truncated, or stored as a 404."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from metaclip_assets import layout
from metaclip_assets.acquisition import REASONS
from metaclip_assets.acquisition import checks as acq_checks
from metaclip_assets.acquisition import steps as acq_steps
from metaclip_assets.curation.steps import read_curated
from metaclip_assets.definitions import acquisition_assets, curation_assets
from metaclip_assets.defs import acquisition_assets as acq
from metaclip_assets.defs.partitions import NUM_BUCKETS, NUM_SHARDS
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.storage import Storage
from metaclip_assets_tests.conftest import (
    WORDNET_ONLY,
    asset_metadata,
    curate,
    materialize,
    materialize_shards,
    snapshot_instance,
    storage_resources,
)

SNAPSHOT = "SAMPLE-2024-10"
ASSETS = [*curation_assets, *acquisition_assets]
# Seed 6 at this size puts the sample's truncated image and its recorded 404 among the matched pairs, so every
# failure kind the sample plants reaches the shards; t stays at MetaCLIP's default (keeps every matched pair).
SEED = 6
SHARD_CONFIG = {"ops": {"webdataset_shards": {"config": {"image_size": 64, "samples_per_shard": 8}}}}


def _key(shard: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"snapshot": SNAPSHOT, "shard": shard})


def _resources(root: Path) -> dict:
    return storage_resources(root, image_source=acq.ImageSourceResource())


def _run(instance, root, selection, partition_key=None, run_config=None, raise_on_error=True):
    kwargs = {"instance": instance, "resources": _resources(root), "raise_on_error": raise_on_error}
    return materialize(ASSETS, selection, partition_key, run_config, **kwargs)


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def acquired(tmp_path_factory):
    root = tmp_path_factory.mktemp("acq")
    manifest = make_sample_snapshot(root, SNAPSHOT, seed=SEED, n_wat_files=3, pages_per_file=30)
    with snapshot_instance(SNAPSHOT) as instance:
        kwargs = {"instance": instance, "resources": _resources(root)}
        curate(
            ASSETS,
            SNAPSHOT,
            metadata_config=WORDNET_ONLY,
            snapshot_selection=["entry_counts", "balanced_subset"],
            **kwargs,
        )
        shards = materialize_shards(ASSETS, ["webdataset_shards"], SNAPSHOT, SHARD_CONFIG, **kwargs)
        report = _run(instance, root, ["acquisition_report"], SNAPSHOT)
        yield root, manifest, shards, report, instance


def _all_rows(root: Path) -> pl.DataFrame:
    frames = [
        Storage(root).read_parquet(key(SNAPSHOT, s)).with_columns(pl.lit(s).alias("acq_shard"))
        for s in range(NUM_SHARDS)
        for key in (layout.acquisition_index_key, layout.acquisition_failures_key)
    ]
    return pl.concat(frames)


def test_every_check_passes(acquired):
    _, _, shards, report, _ = acquired
    for shard, result in shards.items():
        checks = _checks(result)
        assert sorted(checks) == ["nothing_lost", "shards_readable"]
        assert all(c.passed for c in checks.values()), (shard, {n: c.metadata for n, c in checks.items()})
    assert _checks(report)["accounts_for_curated_subset"].passed


def test_outcomes_match_the_sample_manifest(acquired):
    root, manifest, shards, report, _ = acquired
    images = manifest.images
    expected_by_url = {
        **{u: "not_in_archive" for u in images["missing"]},
        **{u: "decode_error" for u in images["corrupt"]},
        **{u: "http_4xx" for u in images["http_error"]},
    }
    rows = _all_rows(root)
    curated = pl.concat(list(read_curated(Storage(root), SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)))
    assert len(rows) == len(curated) and set(rows["pair_id"]) == set(curated["pair_id"])
    for url, reason in rows.select("url", "reason_code").iter_rows():
        expected = expected_by_url.get(url, "ok" if url in manifest.image_classes else "not_in_archive")
        assert reason == expected or (expected == "ok" and reason == "duplicate"), (url, reason, expected)
    failures = set(rows.filter(pl.col("reason_code") != "ok")["reason_code"])
    assert failures == {"not_in_archive", "decode_error", "http_4xx"}  # all three planted kinds reached shards

    ok = int((rows["reason_code"] == "ok").sum())
    summary = Storage(root).read_json(f"{layout.datacard_dir(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)}/acquisition.json")
    assert summary["ok"] == ok and summary["rows"] == len(curated)
    assert summary["success_rate"] == pytest.approx(ok / len(curated), abs=1e-4)
    assert 0.6 < summary["success_rate"] < 1.0
    assert sum(summary["reasons"].values()) == len(curated)
    assert set(summary["reasons"]) <= set(REASONS)
    md = asset_metadata(report, "acquisition_report")
    assert md["success_rate"] == pytest.approx(summary["success_rate"]) and md["samples"] == ok
    assert sum(asset_metadata(r, "webdataset_shards")["dagster/row_count"] for r in shards.values()) == ok
    card = (root / layout.datacard_dir(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS) / "acquisition.md").read_text()
    assert card.startswith("## Image acquisition") and md["acquisition"] == card
    for reason in summary["reasons"]:
        assert f"`{reason}`" in card


def test_rows_are_split_by_image_so_keys_are_unique_per_snapshot(acquired):
    root, *_ = acquired
    rows = _all_rows(root)
    assert rows.group_by("image_uuid").agg(pl.col("acq_shard").n_unique())["acq_shard"].max() == 1
    assert rows["key"].n_unique() == len(rows)
    assert rows["acq_shard"].n_unique() == NUM_SHARDS  # every shard got work


def test_tars_open_with_webdataset(acquired):
    wds = pytest.importorskip("webdataset")
    root, *_ = acquired
    out = root / layout.shards_dir(SNAPSHOT)
    tars = sorted(out.glob("*.tar"))
    index = {r["key"]: r for r in _all_rows(root).filter(pl.col("reason_code") == "ok").iter_rows(named=True)}
    assert len(tars) > NUM_SHARDS  # samples_per_shard=8: several tars per shard
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("pil"))
    assert sorted(s["__key__"] for s in samples) == sorted(index)
    for s in samples:
        row = index[s["__key__"]]
        assert s["jpg"].size == (64, 64) and s["jpg"].mode == "RGB"
        assert s["txt"] == row["text"]
        assert s["json"]["url"] == row["url"] and s["json"]["page_url"] == row["page_url"]
        assert s["json"]["entry_ids"] == row["entry_ids"] and s["json"]["sha256"] == row["sha256"]


def test_progress_and_outcome_are_in_the_run_log(acquired):
    *_, shards, _, instance = acquired
    messages = [e.user_message for e in instance.all_logs(shards["000"].run_id)]
    assert any("rows/s" in m and "ok " in m for m in messages)
    assert any("curated rows" in m and "'kind': 'warc'" in m for m in messages)


def test_rematerializing_skips_complete_shards(acquired):
    root, _, shards, _, instance = acquired
    out = root / layout.shards_dir(SNAPSHOT)

    def fingerprint():
        return {
            p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(out.glob("*.tar"))
        }

    before = fingerprint()
    again = _run(instance, root, ["webdataset_shards"], _key("002"), SHARD_CONFIG)
    md, first = asset_metadata(again, "webdataset_shards"), asset_metadata(shards["002"], "webdataset_shards")
    assert md["shards_written"] == 0 and md["shards_skipped"] == first["shards_written"] > 0
    assert md["reasons"] == first["reasons"]
    assert fingerprint() == before  # not rewritten, not even touched
    assert all(c.passed for c in _checks(again).values())


@pytest.fixture
def scratch(acquired, tmp_path):
    """A copy of the materialized data root, for tests that damage it."""
    root, manifest, _, _, instance = acquired
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    return copy, instance


@pytest.mark.slow  # ~2 s idle, two more runs; the cheaper nothing_lost test below proves the same blocking path
def test_shards_readable_fails_when_a_tar_is_lost(scratch, monkeypatch):
    root, instance = scratch
    real_acquire = acq_steps.acquire

    def losing_disk(*args, **kwargs):  # a tar vanishes between being written and being checked
        result = real_acquire(*args, **kwargs)
        result.shards[0].unlink()
        return result

    monkeypatch.setattr(acq_steps, "acquire", losing_disk)
    result = _run(instance, root, ["webdataset_shards"], _key("001"), SHARD_CONFIG, raise_on_error=False)
    checks = _checks(result)
    assert not checks["shards_readable"].passed and checks["nothing_lost"].passed
    assert checks["shards_readable"].metadata["missing_tars"].value  # names the lost tar
    assert not result.success  # blocking: the report would not run on it

    monkeypatch.setattr(acq_steps, "acquire", real_acquire)  # a plain re-run rebuilds just the lost tar
    healed = _run(instance, root, ["webdataset_shards"], _key("001"), SHARD_CONFIG)
    assert asset_metadata(healed, "webdataset_shards")["shards_written"] == 1
    assert all(c.passed for c in _checks(healed).values())


def test_nothing_lost_fails_when_a_failure_row_is_dropped(scratch, monkeypatch):
    root, instance = scratch
    real_acquire = acq_steps.acquire

    def dropping(*args, **kwargs):  # a writer bug: one failed pair never reaches the failure table
        result = real_acquire(*args, **kwargs)
        pl.read_parquet(result.failures_path).slice(1).write_parquet(result.failures_path)
        return result

    monkeypatch.setattr(acq_steps, "acquire", dropping)
    result = _run(instance, root, ["webdataset_shards"], _key("000"), SHARD_CONFIG, raise_on_error=False)
    check = _checks(result)["nothing_lost"]
    assert not check.passed and check.metadata["lost"].value == 1


@pytest.mark.slow  # ~3-6 s: re-balances the snapshot and reports twice
def test_report_flags_stale_shards_and_stray_tars(scratch):
    root, instance = scratch
    stray = root / layout.shards_dir(SNAPSHOT) / "SAMPLE-2024-10-017-00000.tar"
    shutil.copy(next(stray.parent.glob("*.tar")), stray)  # e.g. left by a run with more shards
    check = _checks(_run(instance, root, ["acquisition_report"], SNAPSHOT))["accounts_for_curated_subset"]
    assert not check.passed and check.metadata["stray_tars"].value == [stray.name]
    stray.unlink()

    # Re-balancing with a lower t changes the curated subset: shards made from the old one are stale.
    _run(instance, root, ["balanced_subset"], SNAPSHOT, {"ops": {"balanced_subset": {"config": {"t": 2}}}})
    check = _checks(_run(instance, root, ["acquisition_report"], SNAPSHOT))["accounts_for_curated_subset"]
    assert not check.passed and check.metadata["not_in_curated"].value > 0


def test_warc_index_is_scanned_once_per_snapshot(acquired):
    root, *_ = acquired
    cached = list((root / "acquisition" / SNAPSHOT).glob("warc-index-*.parquet"))
    assert len(cached) == 1
    assert len(pl.read_parquet(cached[0])) > 0


def test_http_source_is_the_ssrf_safe_fetcher(tmp_path):
    resource = acq.ImageSourceResource(kind="http", timeout_s=2.0, max_retries=0, max_per_host=2)
    source, described = resource.open(Storage(tmp_path), SNAPSHOT)
    assert described["kind"] == "http" and source.timeout == 2.0 and resource.worker_count() == 32
    # No opt-in through config: loopback and private addresses stay refused, before any connection.
    for url in ("http://127.0.0.1:9/a.jpg", "http://10.1.2.3/a.jpg", "http://169.254.169.254/latest/meta-data"):
        assert source.fetch(url).reason_code == "blocked_address"
    with pytest.raises(ValueError, match="'warc' or 'http'"):
        acq.ImageSourceResource(kind="ftp").open(Storage(tmp_path), SNAPSHOT)
    with pytest.raises(FileNotFoundError, match="no WARC files"):
        acq.ImageSourceResource().open(Storage(tmp_path), SNAPSHOT)


def test_report_without_shards_gives_a_clear_error(tmp_path):
    with snapshot_instance("CC-MAIN-2099-01") as instance:
        with pytest.raises(Exception, match="materialize webdataset_shards for every shard"):
            _run(instance, tmp_path, ["acquisition_report"], "CC-MAIN-2099-01")
    assert json.dumps(acq.WebdatasetShardsConfig().model_dump())  # defaults are plain JSON (run config)
    assert acq.WebdatasetShardsConfig().image_size == 224


def test_checks_read_the_files_on_disk(scratch, monkeypatch):
    root, _ = scratch
    out = root / layout.shards_dir(SNAPSHOT)
    rows = acq_steps.rows_for_shard(
        pl.concat(list(read_curated(Storage(root), SNAPSHOT, NUM_SHARDS, NUM_BUCKETS))), 2, NUM_SHARDS
    )
    assert acq_checks.nothing_lost(Storage(root), rows, SNAPSHOT, 2).passed
    assert not acq_checks.nothing_lost(Storage(root), rows.slice(1), SNAPSHOT, 2).passed  # a pair the tables invented
    monkeypatch.setitem(sys.modules, "webdataset", None)  # the same grouping rule, with tarfile
    check = acq_checks.shards_readable(Storage(root), SNAPSHOT, 2)
    assert check.passed and check.metadata["reader"] == "tarfile"
    monkeypatch.undo()

    tar = sorted(out.glob("SAMPLE-2024-10-002-*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])  # a torn copy
    check = acq_checks.shards_readable(Storage(root), SNAPSHOT, 2)
    assert not check.passed, check.metadata
