"""The curation assets end to end on the generated sample snapshot, in a real (temporary) Dagster instance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from metaclip_assets import layout
from metaclip_assets.curation.steps import read_curated
from metaclip_assets.definitions import curation_assets
from metaclip_assets.defs.partitions import NUM_BUCKETS, NUM_SHARDS, shard_partitions
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.storage import Storage
from metaclip_assets_tests.conftest import (
    SAMPLE_METADATA_CONFIG,
    asset_metadata,
    curate,
    materialize,
    snapshot_instance,
    storage_resources,
)

SNAPSHOT = "SAMPLE-2024-10"
T = 30


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    manifest = make_sample_snapshot(root, SNAPSHOT, seed=0)
    with snapshot_instance(SNAPSHOT) as instance:
        results = curate(
            curation_assets,
            SNAPSHOT,
            instance=instance,
            resources=storage_resources(root),
            metadata_config=SAMPLE_METADATA_CONFIG,
            snapshot_selection=["entry_counts", "balanced_subset", "data_card"],
            snapshot_config={"ops": {"balanced_subset": {"config": {"t": T}}}},
        )
        yield root, manifest, results, instance


def test_every_check_passes(pipeline_run):
    _, _, results, _ = pipeline_run
    evaluations = [e for r in results["shards"].values() for e in r.get_asset_check_evaluations()]
    evaluations += results["snapshot"].get_asset_check_evaluations()
    names = sorted({e.check_name for e in evaluations})
    assert names == ["counts_sum_to_matches", "curated_subset_of_matched", "shard_not_empty", "totals_match_parquet"]
    failed = [(e.check_name, e.metadata) for e in evaluations if not e.passed]
    assert not failed, failed


def test_metadata_has_wordnet_and_wikipedia_sources(pipeline_run):
    root, _, results, _ = pipeline_run
    md = asset_metadata(results["metadata"], "metadata_entries")
    counts = md["per_source_counts"]
    assert md["dagster/row_count"] > 86_000
    storage = Storage(root)
    entries, sha = storage.read_json(layout.METADATA_CURRENT)["metadata_json"], md["sha256"]
    assert len(storage.read_json(entries)) == md["dagster/row_count"]
    assert sha == storage.read_json(layout.METADATA_CURRENT)["sha256"]
    assert json.dumps(counts)  # per-source counts recorded
    sources = pl.read_parquet(storage.local_path(f"{layout.metadata_dir(sha)}/entries.parquet"))["source"]
    assert {"number", "wordnet"} <= set(sources.unique().to_list())


def test_bad_records_are_counted_as_planted(pipeline_run):
    root, manifest, results, _ = pipeline_run
    card = Storage(root).read_json(f"{layout.datacard_dir(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)}/summary.json")
    planted = manifest.expected_skips
    assert planted
    for reason, count in planted.items():
        assert card["bad_records"].get(reason) == count, (reason, card["bad_records"], planted)
    md = asset_metadata(results["snapshot"], "data_card")
    assert md["bad_records"] == card["bad_records"]


def test_pool_matches_manifest_pairs(pipeline_run):
    root, manifest, _, _ = pipeline_run
    storage = Storage(root)
    pools = [storage.read_parquet(layout.pool_key(SNAPSHOT, s, NUM_SHARDS)) for s in range(NUM_SHARDS)]
    pool = pl.concat(pools)
    assert pool.select(["url", "text"]).unique().height == manifest.pairs_distinct
    assert pool["url"].str.starts_with("http").all()  # relative URLs resolved


def test_balancing_cuts_the_head_and_keeps_the_tail(pipeline_run):
    root, _, _, _ = pipeline_run
    storage = Storage(root)
    before = storage.read_json(f"{layout.datacard_dir(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)}/entry_counts_before.json")
    after = storage.read_json(f"{layout.datacard_dir(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)}/datacard.json")
    head = [e for e, c in before.items() if c > 3 * T]
    tail = [e for e, c in before.items() if c < T]
    assert head and tail
    assert all(after.get(e, 0) < before[e] for e in head)
    assert all(after.get(e, 0) == before[e] for e in tail)  # every tail match is kept
    assert (
        Path(
            storage.local_path(f"{layout.datacard_dir(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS)}/cumulative_matches.png")
        ).read_bytes()[:8]
        == b"\x89PNG\r\n\x1a\n"
    )


def test_data_card_metadata_is_shown(pipeline_run):
    _, _, results, _ = pipeline_run
    md = asset_metadata(results["snapshot"], "data_card")
    assert "# Data card: SAMPLE-2024-10" in md["data_card"]
    assert "data:image/png;base64," in md["data_card"]
    assert md["funnel"]["curated_pairs"] <= md["funnel"]["matched_pairs"] <= md["funnel"]["pairs_in_pool"]


def test_counts_are_uint64_and_cumulative_equals_single_snapshot(pipeline_run):
    root, _, _, _ = pipeline_run
    storage = Storage(root)
    counts = storage.read_npy(layout.counts_key(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS))
    assert counts.dtype == np.uint64
    assert np.array_equal(
        counts, storage.read_npy(layout.counts_key(SNAPSHOT, NUM_SHARDS, NUM_BUCKETS, cumulative=True))
    )


def test_rematerializing_is_idempotent(pipeline_run):
    root, _, results, instance = pipeline_run
    storage = Storage(root)
    before = pl.concat(list(read_curated(storage, SNAPSHOT, NUM_SHARDS, NUM_BUCKETS))).sort("pair_id")
    materialize(
        curation_assets,
        ["balanced_subset"],
        SNAPSHOT,
        {"ops": {"balanced_subset": {"config": {"t": T}}}},
        instance=instance,
        resources=storage_resources(root),
    )
    after = pl.concat(list(read_curated(storage, SNAPSHOT, NUM_SHARDS, NUM_BUCKETS))).sort("pair_id")
    assert before.equals(after)
    assert not list(Path(root).rglob(".tmp-*"))  # atomic writes leave no temp files behind


def test_missing_shards_give_a_clear_error(tmp_path):
    with snapshot_instance("CC-MAIN-2099-01") as instance:
        Storage(tmp_path).write_json(layout.METADATA_CURRENT, {"sha256": "0" * 64, "metadata_json": "m.json"})
        Storage(tmp_path).write_json("m.json", ["dog"])
        with pytest.raises(Exception, match="materialize crawl_pool and matched_pool"):
            materialize(
                curation_assets,
                ["entry_counts"],
                "CC-MAIN-2099-01",
                instance=instance,
                resources=storage_resources(tmp_path),
            )


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_matched_pool_with_workers_writes_the_same_rows(pipeline_run, monkeypatch, kind):
    """`workers: 2` (threads over the compiled table, or a MatcherPool of spawned processes where it is not built)
    rewrites a shard's matched parquet byte for byte in content; a worker count below 1 is refused."""
    from metaclip_assets.curation import matching

    calls = []
    real = matching.Matcher.parallel_ok
    monkeypatch.setattr(
        matching.Matcher,
        "parallel_ok",
        lambda self, n: calls.append(n) or (real(self, n) if kind == "threads" else False),
    )
    pools = []
    monkeypatch.setattr(
        matching.MatcherPool,
        "match_batch",
        lambda self, texts, _real=matching.MatcherPool.match_batch: pools.append(1) or _real(self, texts),
    )
    root, _, _, instance = pipeline_run
    storage = Storage(root)
    shard = shard_partitions.get_partition_keys()[0]
    path = layout.matched_key(SNAPSHOT, int(shard), NUM_SHARDS)
    before = storage.read_parquet(path)
    kwargs = {"instance": instance, "resources": storage_resources(root)}
    key = {"snapshot": SNAPSHOT, "shard": shard}
    result = materialize(
        curation_assets, ["matched_pool"], key, {"ops": {"matched_pool": {"config": {"workers": 2}}}}, **kwargs
    )
    assert storage.read_parquet(path).equals(before)
    assert asset_metadata(result, "matched_pool")["dagster/row_count"] == len(before)
    assert 2 in calls and bool(pools) == (kind == "processes")
    with pytest.raises(Exception, match="workers must be >= 1"):
        materialize(
            curation_assets, ["matched_pool"], key, {"ops": {"matched_pool": {"config": {"workers": 0}}}}, **kwargs
        )
