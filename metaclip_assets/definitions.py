"""The Dagster code location: `dagster dev -m metaclip_assets.definitions` (or workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from metaclip_assets.defs.metadata_asset import metadata_entries
from metaclip_assets.defs.pool_assets import crawl_pool, matched_pool
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.snapshot_assets import balanced_subset, data_card, entry_counts

curation_assets = [metadata_entries, crawl_pool, matched_pool, entry_counts, balanced_subset, data_card]

defs = dg.Definitions(
    assets=curation_assets,
    resources={"curation_storage": CurationStorage()},
)
