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
BUCKETS = 3
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
    counts = steps.count_snapshot(storage, build.entries, build.sha256, SNAPSHOT, SHARDS, [SNAPSHOT], BUCKETS)
    balanced = steps.balance_snapshot(storage, SNAPSHOT, steps.BalanceSettings(t=3), SHARDS, BUCKETS)
    card = steps.card_for_snapshot(storage, build.entries, build.sha256, SNAPSHOT, SHARDS, BUCKETS)
    return storage, build, pools, matched, counts, balanced, card


def curate_with(storage, build, shards: int, buckets: int) -> tuple[np.ndarray, pl.DataFrame, dict]:
    """Counts, curated set (sorted by pair_id) and count summary of the snapshot with this shard/bucket count."""
    crawl = Storage(layout.crawl_root(storage.root))
    for s in range(shards):
        if not storage.exists(layout.pool_key(SNAPSHOT, s, shards)):
            steps.pool_shard(storage, crawl, SNAPSHOT, s, shards)
    with steps.matching(storage, {str(s): (SNAPSHOT, s) for s in range(shards)}, shards, 1) as match:
        for s in range(shards):
            match(SNAPSHOT, s)
    counts = steps.count_snapshot(storage, build.entries, build.sha256, SNAPSHOT, shards, [SNAPSHOT], buckets)
    steps.balance_snapshot(storage, SNAPSHOT, steps.BalanceSettings(t=3), shards, buckets)
    curated = pl.concat(list(steps.read_curated(storage, SNAPSHOT, shards, buckets))).sort("pair_id")
    return storage.read_npy(layout.counts_key(SNAPSHOT, shards, buckets)), curated, counts.summary


def test_results_do_not_depend_on_shard_or_bucket_count(curated):
    """MetaCLIP's result is a function of the snapshot: counts and curated set are identical for 1/4/16 shards x
    1/8 buckets (cross-shard duplicates resolved by content; a pair's bucket is a range of its pair_id)."""
    storage, build = curated[0], curated[1]
    runs = {(n, b): curate_with(storage, build, n, b) for n in (1, 4, 16) for b in (1, 8)}
    ref_counts, ref_curated, ref_summary = runs[(1, 1)]
    assert len(ref_curated) >= 10 and ref_summary["cross_shard_duplicates"] == 0
    for (n, b), (counts, curated_set, summary) in runs.items():
        assert np.array_equal(counts, ref_counts), (n, b)
        assert curated_set.equals(ref_curated), (n, b)
        assert summary["matched_pairs"] == ref_summary["matched_pairs"]
        if b == 8:  # what one step held: a bucket, not the snapshot
            assert summary["largest_bucket_pairs"] < summary["matched_pairs"] / 3
    # keyed by shard and bucket count: each curation kept its own outputs
    for n, b in runs:
        assert storage.exists(layout.counts_key(SNAPSHOT, n, b))
        assert storage.exists(layout.balanced_bucket_key(SNAPSHOT, n, b, b - 1))


def test_every_step_and_check(curated):
    storage, build, pools, matched, counts, balanced, card = curated
    assert sum(p.pairs for p in pools) > 0 and any(p.check.passed for p in pools)
    assert all(m.sha256 == build.sha256 for m in matched)
    assert sum(m.stats["matched"] for m in matched) >= counts.summary["matched_pairs"] > 0
    assert counts.check.passed and counts.check.name == checks.COUNTS_SUM_TO_MATCHES
    assert counts.summary["cumulative_snapshots"] == [SNAPSHOT] and counts.skipped == []
    assert balanced.check.passed and 0 < balanced.stats.curated <= balanced.stats.matched
    assert card.check.passed and card.funnel["curated_pairs"] == balanced.stats.curated
    assert storage.exists(layout.datacard_key(SNAPSHOT, SHARDS, BUCKETS, "datacard.md"))
    assert "data:image/png;base64," in card.markdown_inline


def test_counts_check_reads_what_was_written(curated):
    storage = curated[0]
    key = layout.counts_key(SNAPSHOT, SHARDS, BUCKETS)
    counts = storage.read_npy(key)
    try:
        storage.write_npy(key, counts + np.uint64(1))
        assert not checks.counts_sum_to_matches(storage, SNAPSHOT, SHARDS, BUCKETS).passed
    finally:
        storage.write_npy(key, counts)


def test_subset_check_fails_on_a_pair_not_matched(curated):
    storage = curated[0]
    bucket = next(
        b for b in range(BUCKETS) if len(storage.read_parquet(layout.balanced_bucket_key(SNAPSHOT, SHARDS, BUCKETS, b)))
    )
    matched = storage.read_parquet(layout.dedup_bucket_key(SNAPSHOT, SHARDS, BUCKETS, bucket))
    curated_key = layout.balanced_bucket_key(SNAPSHOT, SHARDS, BUCKETS, bucket)
    assert checks.curated_subset_of_matched(storage, curated_key, matched).passed
    first_curated = storage.read_parquet(curated_key)["pair_id"][0]
    check = checks.curated_subset_of_matched(storage, curated_key, matched.filter(pl.col("pair_id") != first_curated))
    assert not check.passed and check.metadata["not_in_matched"] == 1


def test_totals_check_compares_with_the_parquet_files(curated):
    storage, *_, card = curated
    entry_total = card.check.metadata["parquet_entry_total"]
    assert not checks.totals_match_parquet(storage, SNAPSHOT, SHARDS, BUCKETS, entry_total + 1).passed


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
