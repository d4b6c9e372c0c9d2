"""Snapshot discovery (sensor + cursor), the crawl download asset, the re-curation schedule and declarative
automation, against a CommonCrawl look-alike served from 127.0.0.1."""

from __future__ import annotations

import json
import socket

import dagster as dg
import pytest

from metaclip_assets.defs.automation import (
    CrawlIndexResource,
    cc_snapshot_job,
    cc_snapshot_sensor,
    crawl_files,
    metaclip_automation_sensor,
    recurate_job,
    recurate_latest_schedule,
    with_automation,
)
from metaclip_assets.defs.metadata_asset import metadata_entries
from metaclip_assets.defs.partitions import NUM_SHARDS, SNAPSHOT_PARTITIONS_NAME, shard_partitions
from metaclip_assets.defs.pool_assets import crawl_pool, matched_pool
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.snapshot_assets import balanced_subset, data_card, entry_counts
from metaclip_assets.sharding import shard_of
from metaclip_assets_tests.crawl._cc_mirror import MirrorServer, publish_snapshot, write_collinfo

OLD, SNAP, NEXT = "CC-MAIN-2029-50", "CC-MAIN-2030-05", "CC-MAIN-2030-09"
SHARDS = shard_partitions.get_partition_keys()
CRAWL_FILES = dg.AssetKey("crawl_files")


def _crawl_pool_after_crawl_files():
    """crawl_pool as definitions.py wires it: downstream of crawl_files (added here if the asset itself does
    not declare it yet; test_definitions_are_wired checks the real code location)."""
    deps = {d.asset_key for spec in crawl_pool.specs for d in spec.deps}
    if CRAWL_FILES in deps:
        return crawl_pool
    return crawl_pool.map_asset_specs(lambda s: s.replace_attributes(deps=[*s.deps, dg.AssetDep(CRAWL_FILES)]))


def make_defs(index_url: str, base_url: str, data_root: str, **index_settings) -> dg.Definitions:
    assets = [
        metadata_entries,
        crawl_files,
        _crawl_pool_after_crawl_files(),
        matched_pool,
        entry_counts,
        balanced_subset,
        data_card,
    ]
    return dg.Definitions(
        assets=with_automation(assets),
        jobs=[cc_snapshot_job, recurate_job],
        sensors=[cc_snapshot_sensor, metaclip_automation_sensor],
        schedules=[recurate_latest_schedule],
        resources={
            "curation_storage": CurationStorage(data_root=data_root),
            "crawl_index": CrawlIndexResource(index_url=index_url, base_url=base_url, timeout_s=5, **index_settings),
        },
    )


@pytest.fixture(scope="module")
def cc(tmp_path_factory):
    """collinfo.json lists OLD (below the minimum), SNAP (published) and NEXT (index entry, no file list yet)."""
    mirror = tmp_path_factory.mktemp("mirror")
    paths = publish_snapshot(mirror, SNAP, tmp_path_factory.mktemp("gen"))
    write_collinfo(mirror, [OLD, SNAP, NEXT])
    (mirror / "bad-json.json").write_text('[{"id": "CC-MAIN-2030-13", ')
    (mirror / "bad-shape.json").write_text('{"crawls": []}')
    (mirror / "bad-id.json").write_text(
        json.dumps([{"id": "CC-MAIN-2030|13", "name": "n", "timegate": "t", "cdx-api": "c"}])
    )
    with MirrorServer(mirror) as url:
        yield mirror, url, paths


def tick(defs, instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor, resources=defs.resources)
    result = cc_snapshot_sensor(context)
    if isinstance(result, dg.SensorResult):
        # what the sensor daemon does with the result before launching the runs
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_new_snapshot_registered_once_and_its_shards_requested(cc, tmp_path):
    mirror, url, _ = cc
    defs = make_defs(
        url + "collinfo.json", url, str(tmp_path / "data"), min_snapshot=SNAP, max_new_snapshots_per_tick=2
    )
    with dg.instance_for_test() as instance:
        first = tick(defs, instance)
        assert isinstance(first, dg.SensorResult)
        # OLD is below the minimum; NEXT has no wat.paths.gz yet, so it waits (and nothing after it jumps ahead)
        [add] = first.dynamic_partitions_requests
        assert (add.partitions_def_name, list(add.partition_keys)) == (SNAPSHOT_PARTITIONS_NAME, [SNAP])
        assert instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == [SNAP]
        keys = sorted(str(r.partition_key) for r in first.run_requests)
        assert keys == sorted(f"{shard}|{SNAP}" for shard in SHARDS) and len(keys) == NUM_SHARDS
        assert len({r.run_key for r in first.run_requests}) == NUM_SHARDS
        assert json.loads(first.cursor) == {"handled": [SNAP]}

        second = tick(defs, instance, first.cursor)
        assert not second.run_requests and not second.dynamic_partitions_requests
        message = second.skip_reason.skip_message
        assert f"{NEXT} not taken yet" in message and "HTTP 404" in message
        # a lost cursor does not re-register or re-request: the registered partition counts as handled
        third = tick(defs, instance, None)
        assert not third.run_requests and not third.dynamic_partitions_requests
        assert instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == [SNAP]

        # NEXT's file list is published: the next tick takes it, and only it
        publish_snapshot(mirror, NEXT, tmp_path / "gen", n_wat_files=3, seed=1)
        fourth = tick(defs, instance, second.cursor)
        assert [list(r.partition_keys) for r in fourth.dynamic_partitions_requests] == [[NEXT]]
        assert {r.partition_key.keys_by_dimension["snapshot"] for r in fourth.run_requests} == {NEXT}
        assert instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == [SNAP, NEXT]
        assert not tick(defs, instance, fourth.cursor).run_requests

        # the weekly schedule re-curates the latest registered snapshot, every shard
        sched = recurate_latest_schedule(dg.build_schedule_context(instance=instance))
        assert sorted(str(r.partition_key) for r in sched) == sorted(f"{s}|{NEXT}" for s in SHARDS)


def test_max_per_tick_and_oldest_first(cc, tmp_path):
    _, url, _ = cc
    defs = make_defs(url + "collinfo.json", url, str(tmp_path), max_new_snapshots_per_tick=1)
    with dg.instance_for_test() as instance:
        # no minimum: OLD comes first, but its files are not published, so nothing is taken past it
        result = tick(defs, instance)
        assert not result.run_requests and f"{OLD} not taken yet" in result.skip_reason.skip_message
        assert instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == []


def test_malformed_or_missing_index_is_reported_not_crashed_on(cc, tmp_path):
    _, url, _ = cc
    with dg.instance_for_test() as instance:
        for index, message in [
            ("bad-json.json", "not valid JSON"),
            ("bad-shape.json", "expected a JSON list of crawls, got dict"),
            ("bad-id.json", "not a CommonCrawl snapshot id"),
            ("missing.json", "HTTP 404"),
        ]:
            defs = make_defs(url + index, url, str(tmp_path))
            result = tick(defs, instance, json.dumps({"handled": ["CC-MAIN-2029-01"]}))
            assert isinstance(result, dg.SkipReason) and message in result.skip_message, index
            assert instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == []


def test_unreachable_index_is_reported(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    defs = make_defs(dead + "collinfo.json", dead, str(tmp_path))
    with dg.instance_for_test() as instance:
        result = tick(defs, instance)
        assert isinstance(result, dg.SkipReason) and "unusable" in result.skip_message


@pytest.mark.slow
def test_requested_run_downloads_the_shard_and_reads_its_pool(cc, tmp_path):
    """Execute one run the sensor requests: crawl_files fetches the shard's WAT files from the server, then
    crawl_pool reads them from the crawl folder. A second run downloads nothing."""
    _, url, paths = cc
    defs = make_defs(url + "collinfo.json", url, str(tmp_path / "data"), min_snapshot=SNAP)
    by_shard: dict[int, list[str]] = {}
    for p in paths:
        by_shard.setdefault(shard_of(p, NUM_SHARDS), []).append(p.rsplit("/", 1)[-1])
    shard = max(by_shard, key=lambda s: len(by_shard[s]))  # the shard with the most files
    with dg.instance_for_test() as instance:
        [request, *_] = [
            r for r in tick(defs, instance).run_requests if r.partition_key.keys_by_dimension["shard"] == SHARDS[shard]
        ]
        job = defs.resolve_job_def(cc_snapshot_job.name)
        result = job.execute_in_process(partition_key=request.partition_key, instance=instance, tags=request.tags)
        assert result.success
        files_md = result.asset_materializations_for_node("crawl_files")[0].metadata
        assert files_md["downloaded"].value == len(by_shard[shard]) and files_md["already_complete"].value == 0
        assert sorted(p.name for p in (tmp_path / "data" / "crawl" / SNAP).glob("*.wat.gz")) == sorted(by_shard[shard])
        pool_md = result.asset_materializations_for_node("crawl_pool")[0].metadata
        assert pool_md["files"].value == len(by_shard[shard]) and pool_md["dagster/row_count"].value > 0

        again = job.execute_in_process(partition_key=request.partition_key, instance=instance)
        md = again.asset_materializations_for_node("crawl_files")[0].metadata
        assert (md["downloaded"].value, md["already_complete"].value) == (0, len(by_shard[shard]))


def _land(instance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def _requested(result, asset: str) -> set[str]:
    return {str(k) for k in result.get_requested_partitions(dg.AssetKey(asset))}


@pytest.mark.slow
def test_downstream_follows_by_automation_once_all_shards_landed(tmp_path):
    defs = make_defs("unused", "unused", str(tmp_path))
    shard_keys = [str(dg.MultiPartitionKey({"snapshot": SNAP, "shard": s})) for s in SHARDS]
    with dg.instance_for_test() as instance:
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert evaluation.total_requested == 0  # nothing until a snapshot exists
        instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, [SNAP])  # what the sensor does
        _land(instance, "metadata_entries")
        for key in shard_keys:  # the sensor's runs: crawl_files + crawl_pool per shard
            _land(instance, "crawl_files", key)
            _land(instance, "crawl_pool", key)
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
        assert _requested(evaluation, "matched_pool") == set(shard_keys)
        assert _requested(evaluation, "entry_counts") == set()  # its shards are not matched yet
        assert _requested(evaluation, "crawl_pool") == set() and _requested(evaluation, "crawl_files") == set()

        for key in shard_keys[:-1]:  # all shards but one land
            _land(instance, "matched_pool", key)
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
        assert evaluation.total_requested == 0  # entry_counts waits; no shard is requested twice
        _land(instance, "matched_pool", shard_keys[-1])
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
        # entry_counts, with balanced_subset and data_card behind it in the same run, exactly once
        for asset in ("entry_counts", "balanced_subset", "data_card"):
            assert _requested(evaluation, asset) == {SNAP}, asset
        assert _requested(evaluation, "matched_pool") == set()
        evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
        assert evaluation.total_requested == 0  # not again while that run has not landed


def test_definitions_are_wired():
    """The code location has the sensor, schedule, automation sensor (RUNNING), crawl_files upstream of
    crawl_pool, and eager conditions on everything downstream of crawl_pool."""
    from metaclip_assets.definitions import defs

    assert defs.resolve_sensor_def("cc_snapshot_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resolve_sensor_def("metaclip_automation").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("recurate_latest_schedule").job_name == recurate_job.name
    graph = defs.resolve_asset_graph()
    assert CRAWL_FILES in graph.get(dg.AssetKey("crawl_pool")).parent_keys
    downstream = dg.AssetSelection.assets("crawl_pool").downstream(include_self=False).resolve(graph)
    assert {"matched_pool", "entry_counts", "balanced_subset", "data_card"} <= {k.to_user_string() for k in downstream}
    for key in downstream:
        assert graph.get(key).automation_condition is not None, key
    for key in ("metadata_entries", "crawl_files", "crawl_pool"):
        assert graph.get(dg.AssetKey(key)).automation_condition is None
