"""The README main job's path, in process: sample -> curation -> shards -> tiny CLIP training -> evaluation.

Asserts what the issues promise of it: the loss goes down on the sample's own curated shards, and the trained
model beats chance on the sample's held-out split.
"""

from __future__ import annotations

import pytest

from metaclip_assets.definitions import pipeline_assets
from metaclip_assets.defs.acquisition_assets import ImageSourceResource
from metaclip_assets.defs.training_assets import TrainingLauncher
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets_tests import conftest as helpers

SNAPSHOT = "SAMPLE-2024-10"
ASSETS = pipeline_assets  # crawl_files (the download) is not needed: the sample is generated in place


@pytest.mark.slow
def test_sample_trains_with_falling_loss_and_beats_chance(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    make_sample_snapshot(tmp_path, SNAPSHOT, seed=0, n_wat_files=4, pages_per_file=60)
    resources = helpers.storage_resources(
        tmp_path, image_source=ImageSourceResource(kind="warc"), training_launcher=TrainingLauncher(mode="local")
    )
    with helpers.snapshot_instance(SNAPSHOT) as instance:
        kwargs = {"instance": instance, "resources": resources}
        helpers.curate(
            ASSETS,
            SNAPSHOT,
            metadata_config=helpers.WORDNET_ONLY,
            snapshot_selection=["entry_counts", "balanced_subset"],
            snapshot_config={"ops": {"balanced_subset": {"config": {"t": 30}}}},
            **kwargs,
        )
        shards_config = {"ops": {"webdataset_shards": {"config": {"image_size": 64}}}}
        helpers.materialize_shards(ASSETS, ["webdataset_shards"], SNAPSHOT, shards_config, **kwargs)
        trained = helpers.materialize(
            ASSETS,
            ["clip_checkpoint"],
            SNAPSHOT,
            {"ops": {"clip_checkpoint": {"config": {"samples_budget": 4800, "threads": 1}}}},
            **kwargs,
        )
        md = helpers.asset_metadata(trained, "clip_checkpoint")
        curve = [loss for _, loss in md["loss_curve"]]  # [step, loss] pairs
        head, tail = curve[: max(1, len(curve) // 5)], curve[-max(1, len(curve) // 5) :]
        assert sum(tail) / len(tail) < sum(head) / len(head) - 0.5, curve
        assert md["final_loss"] < md["first_loss"]
        assert {e.check_name: e.passed for e in trained.get_asset_check_evaluations()} == {"loss_finite": True}

        evaluated = helpers.materialize(ASSETS, ["eval_metrics"], SNAPSHOT, **kwargs)
        em = helpers.asset_metadata(evaluated, "eval_metrics")
        top1 = em["heldout/top1"]
        assert top1 > 0.1 + 0.1, f"top-1 {top1} is not clearly above chance (0.10) on the held-out split"
        assert all(e.passed for e in evaluated.get_asset_check_evaluations())
