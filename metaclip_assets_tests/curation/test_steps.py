"""The curation asset logic without Dagster: every step on the generated sample, straight on storage, with
its checks passing on honest outputs and failing on damaged ones."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from metaclip_assets import layout
from metaclip_assets.curation import checks, steps
from metaclip_assets.metadata.current import build_and_store
from metaclip_assets.metadata.entries import MetadataConfig
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.storage import Storage

SNAPSHOT = "SAMPLE-2024-18"
SHARDS = 4
# A small vocabulary the sample's captions use, plus entries nothing matches.
ENTRIES = ["dog", "cat", "car", "tree", "house", "bird", "red", "a", "the", "zzzz-never"]


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    make_sample_snapshot(root, SNAPSHOT, seed=3, n_wat_files=3, pages_per_file=16)
    storage = Storage(root)
    (root / "entries.json").write_text(json.dumps(ENTRIES))
    build, _ = build_and_store(storage, MetadataConfig(wordnet=False, metadata_json=str(root / "entries.json")))
    crawl = Storage(layout.crawl_root(str(root)))
    pools = [steps.pool_shard(storage, crawl, SNAPSHOT, s, SHARDS) for s in range(SHARDS)]
    with steps.matching(storage, {str(s): (SNAPSHOT, s) for s in range(SHARDS)}, SHARDS, 1) as match:
        matched = [match(SNAPSHOT, s) for s in range(SHARDS)]
    counts = steps.count_snapshot(storage, build.entries, build.sha256, SNAPSHOT, SHARDS, [SNAPSHOT])
    balanced = steps.balance_snapshot(storage, SNAPSHOT, steps.BalanceSettings(t=3))
    card = steps.card_for_snapshot(storage, build.entries, build.sha256, SNAPSHOT, SHARDS)
    return storage, build, pools, matched, counts, balanced, card


def test_every_step_and_check(curated):
    storage, build, pools, matched, counts, balanced, card = curated
    assert sum(p.pairs for p in pools) > 0 and any(p.check.passed for p in pools)
    assert all(m.sha256 == build.sha256 for m in matched)
    assert sum(m.stats["matched"] for m in matched) >= counts.summary["matched_pairs"] > 0
    assert counts.check.passed and counts.check.name == checks.COUNTS_SUM_TO_MATCHES
    assert counts.summary["cumulative_snapshots"] == [SNAPSHOT] and counts.skipped == []
    assert balanced.check.passed and 0 < balanced.stats.curated <= balanced.stats.matched
    assert card.check.passed and card.funnel["curated_pairs"] == balanced.stats.curated
    assert storage.exists(layout.datacard_key(SNAPSHOT, "datacard.md"))
    assert "data:image/png;base64," in card.markdown_inline


def test_counts_check_reads_what_was_written(curated):
    storage = curated[0]
    counts = storage.read_npy(layout.counts_key(SNAPSHOT))
    try:
        storage.write_npy(layout.counts_key(SNAPSHOT), counts + np.uint64(1))
        assert not checks.counts_sum_to_matches(storage, SNAPSHOT).passed
    finally:
        storage.write_npy(layout.counts_key(SNAPSHOT), counts)


def test_subset_check_fails_on_a_pair_not_matched(curated):
    storage = curated[0]
    matched = storage.read_parquet(layout.merged_matched_key(SNAPSHOT))
    assert checks.curated_subset_of_matched(storage, SNAPSHOT, matched).passed
    first_curated = storage.read_parquet(layout.balanced_key(SNAPSHOT))["pair_id"][0]
    check = checks.curated_subset_of_matched(storage, SNAPSHOT, matched.filter(pl.col("pair_id") != first_curated))
    assert not check.passed and check.metadata["not_in_matched"] == 1


def test_totals_check_compares_with_the_parquet_files(curated):
    storage, *_, card = curated
    entry_total = card.check.metadata["parquet_entry_total"]
    assert not checks.totals_match_parquet(storage, SNAPSHOT, entry_total + 1).passed


def test_shard_not_empty():
    empty = checks.shard_not_empty(files=0, pairs=0)
    assert not empty.passed and empty.severity == "WARN" and "fewer shards" in empty.metadata["reason"]
    bad = checks.shard_not_empty(files=2, pairs=0)
    assert not bad.passed and bad.severity == "ERROR" and bad.metadata == {"files": 2, "pairs": 0}
    assert checks.shard_not_empty(files=1, pairs=5).passed


def test_settings_and_missing_inputs(tmp_path):
    assert (steps.BalanceSettings().t, steps.BalanceSettings().seed, steps.MatchSettings().workers) == (20_000.0, 0, 1)
    with pytest.raises(ValueError, match="count_mode must be 'snapshot' or 'cumulative'"):
        steps.BalanceSettings(count_mode="weekly")
    with pytest.raises(FileNotFoundError, match="materialize crawl_pool and matched_pool"):
        steps.require_shards(Storage(tmp_path), "X", layout.matched_key, 2)
    with pytest.raises(FileNotFoundError, match=r"materialize crawl_pool for k0 first"):
        with steps.matching(Storage(tmp_path), {"k0": ("X", 0)}, 2, 1):
            pass


def test_pool_funnel_sums_the_shards():
    pool = {"files": 1, "records_read": 10, "images_seen": 5, "pairs": 3, "duplicates_dropped": 1}
    funnel, bad, benign = steps.pool_funnel(
        [pool | {"skips": {"bad_gzip": 1}, "counts": {"no_alt": 2}}, pool | {"skips": {}, "counts": {"no_alt": 1}}],
        [{"pairs_in": 3, "matched": 2}, {"pairs_in": 3, "matched": 1}],
    )
    assert funnel == {
        "crawl_files": 2,
        "records_read": 20,
        "bad_records": 1,
        "image_links": 10,
        "pairs_extracted": 8,
        "pairs_in_pool": 6,
        "matched_pairs_per_shard": 3,
    }
    assert bad == {"bad_gzip": 1} and benign == {"no_alt": 3}
