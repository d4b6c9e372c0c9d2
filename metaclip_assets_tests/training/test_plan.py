"""The training plan and its launch: the asset's config defaults come from the plain config, its paths from
layout.py, its check name from the process that reports it, and the pod spec from a plain function."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from metaclip_assets import layout
from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.training_assets import ClipTrainingConfig, clip_checkpoint
from metaclip_assets.training import __main__ as entry
from metaclip_assets.training import k8s_pod
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
        f"s3://bucket/root/{layout.datacard_key(s, 'datacard.json')}",
        f"s3://bucket/root/{layout.datacard_key(s, 'summary.json')}",
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
