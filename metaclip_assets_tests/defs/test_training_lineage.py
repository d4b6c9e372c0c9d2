"""Lineage and re-training of `clip_checkpoint`: each run version trains once into its own folder, an unchanged one
is reported without launching, and snapshot T's materialization names the T-1 run it warm-started from (the edge
Dagster cannot draw for dynamic partitions, pinned below so that a Dagster that can will show up here)."""

from __future__ import annotations

import hashlib
import warnings

import dagster as dg
import pytest

from metaclip_assets import layout
from metaclip_assets.defs.export_assets import exported_model
from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.training_assets import ClipTrainingConfig, clip_checkpoint
from metaclip_assets.storage import Storage
from metaclip_assets.training import plan as training_plan
from metaclip_assets.training.toy_data import make_toy_shards
from metaclip_assets_tests.conftest import materialize, snapshot_instance, storage_resources

S1, S2 = "CC-MAIN-2024-10", "CC-MAIN-2024-18"
EXPERIMENT, MODEL = "lineage", "tiny-clip"
# Two optimizer steps of the CPU model: a real training, in seconds.
TINY = {
    "model": MODEL,
    "experiment": EXPERIMENT,
    "batch_size": 16,
    "samples_budget": 32,
    "threads": 1,
    "log_every": 1,
    "checkpoint_every": 1000,
}


def test_dagster_refuses_a_self_dependency_of_dynamic_partitions():
    """Why the warm start is metadata, not an edge: Dagster 1.13 takes a self-dependency only through a
    TimeWindowPartitionMapping on time partitions. When this starts to pass, draw the edge instead."""

    class PreviousSnapshot(dg.IdentityPartitionMapping):
        pass

    with warnings.catch_warnings(), pytest.raises(dg.DagsterInvalidDefinitionError, match="depends on itself"):
        warnings.simplefilter("ignore")  # non-built-in partition mappings are deprecated as well

        @dg.asset(
            name="clip_checkpoint",
            partitions_def=dg.DynamicPartitionsDefinition(name="cc_snapshot"),
            deps=[dg.AssetDep("clip_checkpoint", partition_mapping=PreviousSnapshot())],
        )
        def _self_dependent(): ...


def test_asset_carries_a_code_version_and_says_where_its_lineage_is():
    spec = next(iter(clip_checkpoint.specs))
    assert spec.code_version == training_plan.TRAINING_CODE_VERSION
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey("webdataset_shards")}
    assert "warm start" in spec.description and "cannot show as an edge" in spec.description


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_unchanged_inputs_do_not_retrain_and_versions_never_overwrite(tmp_path, monkeypatch):
    for seed, s in enumerate((S1, S2), 1):
        make_toy_shards(tmp_path / layout.shards_dir(s), n_shards=1, per_shard=32, size=32, seed=seed)
    storage = Storage(tmp_path)
    launches: list[str] = []
    launch = TrainingLauncher.launch

    def counted(self, context, extras, *args, **kwargs):
        launches.append(extras["train_config"]["output_dir"])
        return launch(self, context, extras, *args, **kwargs)

    monkeypatch.setattr(TrainingLauncher, "launch", counted)
    launcher = TrainingLauncher(env={"MLFLOW_TRACKING_URI": "none", "OMP_NUM_THREADS": "1"})
    resources = storage_resources(tmp_path, training_launcher=launcher)

    with snapshot_instance(S1, S2) as instance:

        def train(snapshot: str, **changes) -> tuple[dg.AssetMaterialization, dg.ExecuteInProcessResult]:
            config = {"ops": {"clip_checkpoint": {"config": {**TINY, **changes}}}}
            result = materialize([clip_checkpoint], None, snapshot, config, instance=instance, resources=resources)
            [check] = result.get_asset_check_evaluations()
            assert check.passed
            return result.asset_materializations_for_node("clip_checkpoint")[0], result

        def pointer(snapshot: str) -> dict:
            return storage.read_json(layout.training_pointer_key(EXPERIMENT, MODEL, snapshot))

        # 1. A real training of S1, into its version's folder; the pointer names it.
        first, first_run = train(S1)
        v1 = first.metadata["run_version"].value
        run_dir = tmp_path / layout.training_run_dir(EXPERIMENT, MODEL, S1, v1)
        assert launches == [str(run_dir)] and first.tags["dagster/data_version"] == v1
        assert first.metadata["run_status"].value == "trained" and first.metadata["warm_start_snapshot"].value == "none"
        assert pointer(S1)["version"] == v1 and pointer(S1)["dagster_run_id"] == first_run.run_id
        weights = digest(run_dir / "final.pt")

        # 2. Nothing changed: no launch, the same data version, the trained run's facts shown again.
        again, _ = train(S1, threads=2, log_every=5)  # operational fields only
        assert len(launches) == 1 and again.tags["dagster/data_version"] == v1
        assert again.metadata["up_to_date"].value is True and again.metadata["run_status"].value.startswith("up to")
        assert again.metadata["trained_by_run"].value == first_run.run_id
        assert again.metadata["checkpoint_path"].value == first.metadata["checkpoint_path"].value

        # 3. S2 warm-starts from S1's current run, and says so: version, checkpoint, the run that trained it.
        second, _ = train(S2)
        assert len(launches) == 2 and second.metadata["warm_start_snapshot"].value == S1
        assert second.metadata["warm_start_version"].value == v1
        assert second.metadata["warm_start_run"].value == first_run.run_id
        assert second.metadata["warm_start_from"].value == str(run_dir / "final.pt")
        assert pointer(S2)["warm_start"]["version"] == v1

        # 4. Another learning rate for S1: a new version in a new folder; the first run's checkpoint is untouched.
        changed, _ = train(S1, lr=1e-3)
        v2 = changed.metadata["run_version"].value
        assert len(launches) == 3 and v2 != v1 and changed.tags["dagster/data_version"] == v2
        assert digest(run_dir / "final.pt") == weights and pointer(S1)["version"] == v2
        # ... and S2, warm-started from the run S1 no longer points at, would train again.
        recipe = ClipTrainingConfig(**TINY).model_dump()
        s2_plan = training_plan.plan_training(storage, recipe, S2, [S1, S2], str(tmp_path))
        assert s2_plan.action == "train" and s2_plan.warm_start.version == v2

        # 5. Back to the first config: trained before, so the pointer names it again without a launch.
        back, _ = train(S1)
        assert len(launches) == 3 and back.metadata["run_version"].value == v1 and pointer(S1)["version"] == v1
        assert back.metadata["run_status"].value.startswith("trained before")

        # 6. The export reads the snapshot's current run version through its pointer.
        exported = materialize(
            [exported_model],
            None,
            S1,
            {
                "ops": {
                    "exported_model": {"config": {"model": MODEL, "experiment": EXPERIMENT, "formats": ["open_clip"]}}
                }
            },
            instance=instance,
            resources=resources,
        ).asset_materializations_for_node("exported_model")[0]
        assert exported.metadata["run_version"].value == v1
        assert exported.metadata["checkpoint"].value == str(run_dir / "final.pt")
