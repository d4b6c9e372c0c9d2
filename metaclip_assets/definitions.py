"""The Dagster code location: `dagster dev -m metaclip_assets.definitions` (or workspace.yaml)."""

from __future__ import annotations

import dagster as dg

from metaclip_assets import settings
from metaclip_assets.defs import automation
from metaclip_assets.defs.acquisition_assets import ImageSourceResource, acquisition_report, webdataset_shards
from metaclip_assets.defs.eval_assets import eval_metrics
from metaclip_assets.defs.export_assets import exported_model
from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.metadata_asset import metadata_entries
from metaclip_assets.defs.metadata_worldwide_asset import metadata_language
from metaclip_assets.defs.pool_assets import crawl_pool, matched_pool
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.snapshot_assets import balanced_subset, data_card, entry_counts
from metaclip_assets.defs.training_assets import clip_checkpoint

metadata_assets = [metadata_entries, metadata_language]  # English (v1) and one partition per language (worldwide)
curation_assets = [*metadata_assets, crawl_pool, matched_pool, entry_counts, balanced_subset, data_card]
acquisition_assets = [webdataset_shards, acquisition_report]
training_assets = [clip_checkpoint]
eval_assets = [eval_metrics]
export_assets = [exported_model]
# What runs on crawl files already in place (the sample, a local mirror, tests).
pipeline_assets = [*curation_assets, *acquisition_assets, *training_assets, *eval_assets, *export_assets]
# crawl_files downloads WAT files for snapshots the sensor discovers; it needs the crawl_index resource.
all_assets = automation.with_automation([automation.crawl_files, *pipeline_assets])

defs = dg.Definitions(
    assets=all_assets,
    jobs=[automation.cc_snapshot_job, automation.recurate_job],
    sensors=[automation.cc_snapshot_sensor, automation.metaclip_automation_sensor],
    schedules=[automation.recurate_latest_schedule],
    resources={
        "curation_storage": CurationStorage(),
        "image_source": ImageSourceResource(),
        # local subprocess by default; METACLIP_TRAINING_MODE=k8s submits GPU pods via PipesK8sClient
        "training_launcher": TrainingLauncher(mode=settings.training_mode()),
        "crawl_index": automation.CrawlIndexResource(),
    },
)
