"""Partitions: one dynamic partition per CommonCrawl snapshot, crossed with static shards of its files."""


import os

import dagster as dg

from metaclip_assets.curation.sharding import shard_keys

SNAPSHOT_PARTITIONS_NAME = "cc_snapshot"
# The shard count is part of the partition definition, so it is fixed when the code location loads.
NUM_SHARDS = int(os.environ.get("METACLIP_NUM_SHARDS", "4"))

snapshot_partitions = dg.DynamicPartitionsDefinition(name=SNAPSHOT_PARTITIONS_NAME)
shard_partitions = dg.StaticPartitionsDefinition(shard_keys(NUM_SHARDS))
snapshot_shard_partitions = dg.MultiPartitionsDefinition({"snapshot": snapshot_partitions, "shard": shard_partitions})

# A snapshot-level asset reads every shard of its snapshot.
all_shards_of_snapshot = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="snapshot")


def snapshot_and_shard(context: dg.AssetExecutionContext) -> tuple[str, int]:
    keys = context.partition_key.keys_by_dimension
    return keys["snapshot"], int(keys["shard"])
