"""The README main job's path, in process: sample -> curation -> shards -> tiny CLIP training -> evaluation.

Asserts what the issues promise of it: the loss goes down on the sample's own curated shards, and the trained
model beats chance on the sample's held-out split.
"""

from __future__ import annotations

import dagster as dg
import pytest

from metaclip_assets.definitions import pipeline_assets
from metaclip_assets.defs.acquisition_assets import ImageSourceResource
from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME, shard_partitions
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.training_assets import TrainingLauncher
from metaclip_assets.sample.snapshot import make_sample_snapshot

SNAPSHOT = "SAMPLE-2024-10"
WORDNET_ONLY = {"ops": {"metadata_entries": {"config": {"wiki_dump_globs": [], "pageview_globs": []}}}}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
ASSETS = pipeline_assets  # crawl_files (the download) is not needed: the sample is generated in place


def _run(instance, resources, selection, partition_key=None, run_config=None):
    result = dg.materialize(
        ASSETS,
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        run_config={**IN_PROCESS, **(run_config or {})},
    )
    assert result.success
    return result


def _metadata(result, asset) -> dict:
    (mat,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.slow
def test_sample_trains_with_falling_loss_and_beats_chance(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_sample_snapshot(tmp_path, SNAPSHOT, seed=0, n_wat_files=4, pages_per_file=60)
    resources = {
        "curation_storage": CurationStorage(data_root=str(tmp_path)),
        "image_source": ImageSourceResource(kind="warc"),
        "training_launcher": TrainingLauncher(mode="local"),
    }
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, [SNAPSHOT])
        _run(instance, resources, ["metadata_entries"], run_config=WORDNET_ONLY)
        for shard in shard_partitions.get_partition_keys():
            key = dg.MultiPartitionKey({"snapshot": SNAPSHOT, "shard": shard})
            _run(instance, resources, ["crawl_pool", "matched_pool"], key)
        _run(
            instance,
            resources,
            ["entry_counts", "balanced_subset"],
            SNAPSHOT,
            {"ops": {"balanced_subset": {"config": {"t": 30}}}},
        )
        for shard in shard_partitions.get_partition_keys():
            key = dg.MultiPartitionKey({"snapshot": SNAPSHOT, "shard": shard})
            _run(
                instance,
                resources,
                ["webdataset_shards"],
                key,
                {"ops": {"webdataset_shards": {"config": {"image_size": 64}}}},
            )
        trained = _run(
            instance,
            resources,
            ["clip_checkpoint"],
            SNAPSHOT,
            {"ops": {"clip_checkpoint": {"config": {"samples_budget": 4800, "threads": 1}}}},
        )
        md = _metadata(trained, "clip_checkpoint")
        curve = [loss for _, loss in md["loss_curve"]]  # [step, loss] pairs
        head, tail = curve[: max(1, len(curve) // 5)], curve[-max(1, len(curve) // 5) :]
        assert sum(tail) / len(tail) < sum(head) / len(head) - 0.5, curve
        assert md["final_loss"] < md["first_loss"]
        assert {e.check_name: e.passed for e in trained.get_asset_check_evaluations()} == {"loss_finite": True}

        evaluated = _run(instance, resources, ["eval_metrics"], SNAPSHOT)
        em = _metadata(evaluated, "eval_metrics")
        top1 = em["heldout/top1"]
        assert top1 > 0.1 + 0.1, f"top-1 {top1} is not clearly above chance (0.10) on the held-out split"
        assert all(e.passed for e in evaluated.get_asset_check_evaluations())
