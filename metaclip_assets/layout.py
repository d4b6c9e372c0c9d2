"""Storage keys of every artifact, in one place, so readers and writers cannot drift apart.

Per-shard artifacts live under ``shards-<N>/`` so files from a run with another shard count are never mixed in.
"""

from __future__ import annotations

METADATA_CURRENT = "metadata/current.json"


def metadata_dir(sha256: str) -> str:
    return f"metadata/{sha256[:16]}"


def shard_key(stage: str, snapshot: str, shard: int, num_shards: int, ext: str = "parquet") -> str:
    return f"{stage}/{snapshot}/shards-{num_shards}/{shard:03d}.{ext}"


def pool_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("pool", snapshot, shard, num_shards)


def pool_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("pool", snapshot, shard, num_shards, "stats.json")


def matched_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("matched", snapshot, shard, num_shards)


def matched_stats_key(snapshot: str, shard: int, num_shards: int) -> str:
    return shard_key("matched", snapshot, shard, num_shards, "stats.json")


def counts_key(snapshot: str, cumulative: bool = False) -> str:
    return f"counts/{snapshot}/entry_counts{'_cumulative' if cumulative else ''}.npy"


def counts_summary_key(snapshot: str) -> str:
    return f"counts/{snapshot}/summary.json"


def merged_matched_key(snapshot: str) -> str:
    return f"counts/{snapshot}/matched_dedup.parquet"


def balanced_key(snapshot: str) -> str:
    return f"balanced/{snapshot}/curated.parquet"


def balanced_summary_key(snapshot: str) -> str:
    return f"balanced/{snapshot}/summary.json"


def datacard_dir(snapshot: str) -> str:
    return f"datacard/{snapshot}"
