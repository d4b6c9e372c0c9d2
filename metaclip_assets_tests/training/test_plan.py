"""The training plan and its launch: the asset's config defaults come from the plain config, its paths from
layout.py, its check name from the process that reports it, and the pod spec from a plain function."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from metaclip_assets import layout
from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.training_assets import ClipTrainingConfig, clip_checkpoint
from metaclip_assets.settings import num_buckets, num_shards
from metaclip_assets.storage import Storage
from metaclip_assets.training import __main__ as entry
from metaclip_assets.training import k8s_pod
from metaclip_assets.training import plan as training_plan
from metaclip_assets.training.config import FINAL, TrainConfig
from metaclip_assets.training.plan import ASSET_DEFAULTS, checkpoint_path, train_config_for


def test_asset_config_defaults_are_the_plain_ones():
    assert ClipTrainingConfig().model_dump() == {k: getattr(ASSET_DEFAULTS, k) for k in ClipTrainingConfig.model_fields}
    # The asset's recipe is TrainConfig's except the budget (a CPU sample in seconds, not a run started by hand).
    plain = TrainConfig(snapshot="", output_dir="")
    differ = {
        f.name for f in dataclasses.fields(TrainConfig) if getattr(plain, f.name) != getattr(ASSET_DEFAULTS, f.name)
    }
    assert differ == {"batch_size", "samples_budget"}
    assert (ASSET_DEFAULTS.batch_size, ASSET_DEFAULTS.samples_budget) == (64, 6_400)


def test_check_name_is_the_one_the_process_reports():
    assert {spec.name for spec in clip_checkpoint.check_specs} == {entry.CHECK_LOSS_FINITE}


def test_paths_come_from_layout():
    root, s = "s3://bucket/root/", "CC-MAIN-2024-18"
    run_dir = layout.training_run_dir("exp", "ViT-B-32-quickgelu", s)
    assert checkpoint_path(root, "exp", "ViT-B-32-quickgelu", s) == f"s3://bucket/root/{run_dir}/{FINAL}"
    recipe = ClipTrainingConfig(experiment="exp", model="ViT-B-32-quickgelu").model_dump()
    cfg = train_config_for(recipe, s, ["CC-MAIN-2024-10", s], root)
    assert cfg["output_dir"] == f"s3://bucket/root/{run_dir}"
    assert cfg["warm_start_from"] == checkpoint_path(root, "exp", "ViT-B-32-quickgelu", "CC-MAIN-2024-10")
    assert cfg["shard_root"] == f"s3://bucket/root/{layout.SHARDS_DIR}" and cfg["data_root"] == root
    assert cfg["data_card_paths"] == [
        f"s3://bucket/root/{layout.datacard_key(s, num_shards(), num_buckets(), 'datacard.json')}",
        f"s3://bucket/root/{layout.datacard_key(s, num_shards(), num_buckets(), 'summary.json')}",
    ]
    assert train_config_for({**recipe, "shard_root": "/elsewhere"}, s, [s], root)["shard_root"] == "/elsewhere"


def test_pod_spec_is_a_plain_function_of_the_launcher_settings():
    launcher = TrainingLauncher(mode="k8s", gpu_count=2, env_from_secrets=["env"], pvc_claim_name=None)
    settings = SimpleNamespace(**launcher.model_dump())  # any object with the settings, no Dagster
    for gpu, name in ((True, "trainer"), (False, "evaluator")):
        assert k8s_pod.pod_spec(settings, gpu=gpu, container_name=name) == launcher.pod_spec(gpu, name)
    spec = k8s_pod.pod_spec(settings)
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "data" not in {v["name"] for v in spec["volumes"]}


# ---- run versions and the pointer -----------------------------------------------------------------------------
S0, S1, S2 = "CC-MAIN-2023-50", "CC-MAIN-2024-10", "CC-MAIN-2024-18"


def fake_shards(root, snapshot: str, sizes=(100, 200)) -> None:
    """Tar-named files: a version reads only names, sizes and modification times, never the contents."""
    folder = root / layout.shards_dir(snapshot)
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        (folder / f"{i:06d}.tar").write_bytes(b"x" * size)


def fake_training(storage: Storage, plan: training_plan.TrainingPlan, run_id: str) -> None:
    """What the asset does after a successful training process: the checkpoint exists, then record + pointer."""
    storage.write_bytes(plan.checkpoint_key, f"weights of {plan.version}".encode())
    training_plan.publish(storage, training_plan.run_record(plan, {"mlflow_run_id": f"ml-{run_id}"}, run_id, True))


def test_run_version_changes_with_what_is_trained_and_nothing_else(tmp_path):
    storage = Storage(tmp_path)
    fake_shards(tmp_path, S1)
    recipe = ClipTrainingConfig(experiment="e", model="tiny-clip").model_dump()

    def plan(recipe=recipe, snapshot=S1, data_root=str(tmp_path), registered=(S1, S2)):
        return training_plan.plan_training(storage, recipe, snapshot, list(registered), data_root)

    first = plan()
    assert first.action == "train" and len(first.version) == training_plan.VERSION_CHARS
    assert (
        first.train_config["output_dir"] == f"{tmp_path}/{layout.training_run_dir('e', 'tiny-clip', S1, first.version)}"
    )
    assert first.checkpoint_key == layout.training_checkpoint_key("e", "tiny-clip", S1, first.version)
    assert first.warm_start is None and first.train_config["warm_start_from"] is None
    assert first.data["tars"] == {S1: 2} and first.data["bytes"] == {S1: 300}
    TrainConfig.from_dict(first.train_config)
    # Operational fields, the data root's mount point and later snapshots do not change what is trained.
    same = {"threads": 3, "workers": 2, "log_every": 1, "checkpoint_every": 7, "mlflow_ui_url": "http://x"}
    assert plan({**recipe, **same}).version == first.version
    assert plan(data_root="/data").version == first.version
    assert plan(registered=(S1,)).version == first.version
    # A field that changes the training does, and so does a shard written again.
    assert plan({**recipe, "lr": 1e-3}).version != first.version
    assert plan({**recipe, "samples_budget": 640}).version != first.version
    fake_shards(tmp_path, S1, sizes=(100, 201))
    assert plan().version != first.version
    with pytest.raises(FileNotFoundError, match=f"materialize webdataset_shards for {S2} first"):
        plan({**recipe, "strategy": "from_scratch"}, snapshot=S2)


def test_pointer_decides_warm_start_and_whether_to_train(tmp_path):
    storage = Storage(tmp_path)
    for s in (S1, S2):
        fake_shards(tmp_path, s)
    recipe = ClipTrainingConfig(experiment="e", model="tiny-clip").model_dump()

    def plan(snapshot, recipe=recipe):
        return training_plan.plan_training(storage, recipe, snapshot, [S1, S2], "/data")

    with pytest.raises(FileNotFoundError, match=f"Materialize clip_checkpoint for {S1} first"):
        plan(S2)  # warm start from S1, which was not trained
    assert plan(S2, {**recipe, "strategy": "from_scratch"}).warm_start is None

    v1 = plan(S1)
    fake_training(storage, v1, "run-1")
    pointer = storage.read_json(layout.training_pointer_key("e", "tiny-clip", S1))
    assert pointer["version"] == v1.version and pointer["checkpoint"] == v1.checkpoint_key
    assert storage.read_json(layout.training_record_key("e", "tiny-clip", S1, v1.version)) == pointer
    again = plan(S1)
    assert again.version == v1.version and again.action == "up_to_date" and again.done["dagster_run_id"] == "run-1"

    t2 = plan(S2)
    assert t2.warm_start.version == v1.version and t2.warm_start.record["dagster_run_id"] == "run-1"
    assert t2.train_config["warm_start_from"] == f"/data/{v1.checkpoint_key}"
    assert t2.inputs["warm_start_version"] == v1.version
    fake_training(storage, t2, "run-2")
    assert storage.read_json(layout.training_pointer_key("e", "tiny-clip", S2))["warm_start"]["version"] == v1.version

    # Another config for S1: its own dir, the first run's untouched; S2's warm start changed, so S2 trains again.
    changed = plan(S1, {**recipe, "lr": 1e-3})
    assert changed.action == "train" and changed.version != v1.version
    fake_training(storage, changed, "run-3")
    assert storage.read_bytes(v1.checkpoint_key) == f"weights of {v1.version}".encode()
    assert training_plan.require_checkpoint(storage, "e", "tiny-clip", S1).key == changed.checkpoint_key
    t2_after = plan(S2)
    assert t2_after.action == "train" and t2_after.version != t2.version
    assert t2_after.warm_start.version == changed.version
    # Back to the first config: trained before, so the pointer names it again without a training.
    back = plan(S1)
    assert back.version == v1.version and back.action == "repoint" and back.done["dagster_run_id"] == "run-1"


def test_checkpoint_resolution_and_its_errors(tmp_path):
    storage = Storage(tmp_path)
    assert training_plan.resolve_checkpoint(storage, "e", "m", S0) is None
    with pytest.raises(FileNotFoundError, match=f"Materialize clip_checkpoint for {S0} first"):
        training_plan.require_checkpoint(storage, "e", "m", S0)
    # A training from before versioned dirs: final.pt in the snapshot dir, no pointer.
    storage.write_bytes(layout.training_checkpoint_key("e", "m", S0), b"old")
    old = training_plan.require_checkpoint(storage, "e", "m", S0)
    assert old.key == f"{layout.training_snapshot_dir('e', 'm', S0)}/{FINAL}"
    assert old.version == training_plan.UNVERSIONED
    # A pointer wins over it; one naming a deleted checkpoint says what to do.
    record = {"experiment": "e", "model": "m", "snapshot": S0, "version": "abc", "checkpoint": "nowhere/final.pt"}
    with pytest.raises(FileNotFoundError, match="does not exist: the Dagster process and the training process"):
        training_plan.publish(storage, record)
    storage.write_json(layout.training_pointer_key("e", "m", S0), record)
    with pytest.raises(FileNotFoundError, match=f"materialize clip_checkpoint for {S0} again"):
        training_plan.resolve_checkpoint(storage, "e", "m", S0)
    assert training_plan.resolve_checkpoints(storage, "e", "m", [S1]) == {}


def test_shard_root_is_listed_where_this_process_sees_it(tmp_path):
    storage = Storage(tmp_path / "data")
    assert training_plan.shard_location(storage, None, "/data") == (storage, layout.SHARDS_DIR)
    assert training_plan.shard_location(storage, "/data/mine/", "/data/") == (storage, "mine")
    other, prefix = training_plan.shard_location(storage, str(tmp_path / "elsewhere"), "/data")
    assert other.root == str(tmp_path / "elsewhere") and prefix == ""
