"""The curated set must not depend on how a snapshot's files are split into shards."""

from __future__ import annotations

import numpy as np
import pytest

from metaclip_assets.crawl.build import build_pool
from metaclip_assets.curation.matching import Matcher
from metaclip_assets.curation.stages import balance, count_entries, match_pool, merge_shards
from metaclip_assets.metadata.wordnet import wordnet_entries
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.sharding import files_for_shard, shard_keys, shard_of

SNAPSHOT = "SAMPLE-2024-10"


def test_shard_of_is_stable_and_uses_the_base_name():
    # Fixed values: a change here would move files between shards for every existing snapshot.
    assert [shard_of(f"CC-MAIN-x-{i:05d}.warc.wat.gz", 4) for i in range(6)] == [
        shard_of(f"/mirror/a/CC-MAIN-x-{i:05d}.warc.wat.gz", 4) for i in range(6)
    ]
    assert shard_of("CC-MAIN-20240224-00000.warc.wat.gz", 1) == 0
    assert shard_keys(4) == ["000", "001", "002", "003"]
    with pytest.raises(ValueError):
        shard_keys(0)


def _curate(files, num_shards, matcher, t, seed=0):
    frames = []
    names = [name for _, name in files]
    paths = dict((name, path) for path, name in files)
    for shard in range(num_shards):
        mine = files_for_shard(names, shard, num_shards)
        pool, _ = build_pool([(paths[n], n) for n in mine], snapshot=SNAPSHOT)
        frames.append(match_pool(pool, matcher)[0])
    merged, duplicates = merge_shards(frames)
    counts = count_entries(merged, len(matcher.entries))
    curated, _, _ = balance(merged, counts, t=t, seed=seed)
    return merged, counts, curated, duplicates


def test_curated_set_identical_for_1_and_4_shards(tmp_path):
    make_sample_snapshot(tmp_path, SNAPSHOT, seed=0)
    crawl = tmp_path / "crawl" / SNAPSHOT
    files = sorted((p, p.name) for p in crawl.iterdir() if p.name.endswith((".wat.gz", ".warc.gz")))
    assert len({shard_of(n, 4) for _, n in files}) == 4, "the sample must put files in every one of 4 shards"
    matcher = Matcher(wordnet_entries())
    one = _curate(files, 1, matcher, t=30)
    four = _curate(files, 4, matcher, t=30)
    cols = ["pair_id", "url", "text", "source_file", "record_offset", "entry_ids"]
    assert one[0].select(cols).sort("pair_id").equals(four[0].select(cols).sort("pair_id"))
    assert np.array_equal(one[1], four[1])
    curated_1, curated_4 = one[2].select(cols).sort("pair_id"), four[2].select(cols).sort("pair_id")
    assert curated_1.equals(curated_4)
    assert 0 < len(curated_1) < len(one[0])  # balancing did cut something, and kept something
    # The sample plants the same pair in two files: found within one shard or across shards, kept once either way.
    assert one[0].select(["url", "text"]).is_duplicated().sum() == 0
    assert four[3] >= 0 and one[3] == 0
    # Another seed gives another (but equally shard-independent) subset.
    assert not _curate(files, 4, matcher, t=30, seed=1)[2].select(cols).sort("pair_id").equals(curated_4)
