"""Which shard a crawl file belongs to.

A shard is a stable hash bucket of the source file's name, so a file lands in the same shard on every run and on
every machine (Python's ``hash()`` is salted per process and would not do). Adding files to a snapshot never moves
existing files between shards.
"""

from __future__ import annotations

import hashlib


def shard_keys(num_shards: int) -> list[str]:
    """Partition keys "000", "001", ...: zero-padded so they sort the same as numbers in the UI."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    width = max(3, len(str(num_shards - 1)))
    return [f"{i:0{width}d}" for i in range(num_shards)]


def shard_of(source_name: str, num_shards: int) -> int:
    """Stable bucket of a file name (the base name, so mirrors at other paths agree)."""
    base = source_name.rsplit("/", 1)[-1]
    digest = hashlib.blake2b(base.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % num_shards


def files_for_shard(source_names: list[str], shard: int, num_shards: int) -> list[str]:
    return sorted(name for name in source_names if shard_of(name, num_shards) == shard)
