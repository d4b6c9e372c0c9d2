"""The evaluation plan: the asset's config defaults come from EvalConfig (and the training asset's for which
checkpoint), its check names from the process that reports them, and the MLflow store rule is the training's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metaclip_assets import layout
from metaclip_assets.defs.eval_assets import EvalMetricsConfig, RetrievalSetConfig, ZeroShotSetConfig, eval_metrics
from metaclip_assets.defs.training_assets import ClipTrainingConfig
from metaclip_assets.evaluation import __main__ as entry
from metaclip_assets.evaluation import datasets, runner
from metaclip_assets.evaluation.config import HELDOUT, EvalConfig
from metaclip_assets.evaluation.plan import eval_config_for
from metaclip_assets.training.config import TrainConfig
from metaclip_assets.training.tracking import sqlite_store_uri

RENAMED = {"separate_mlflow_run": "separate_run"}  # asset config field -> EvalConfig field


def test_asset_config_defaults_are_the_plain_ones():
    asset = EvalMetricsConfig().model_dump()
    plain = EvalConfig(checkpoint="")
    # model and experiment name the checkpoint, so they follow the training asset (EvalConfig has no model and
    # leaves experiment to the checkpoint's training config)
    shared = {k: v for k, v in asset.items() if hasattr(plain, RENAMED.get(k, k)) and k != "experiment"}
    assert {k: getattr(plain, RENAMED.get(k, k)) for k in shared} == shared and len(shared) == 13
    assert plain.regression_dataset == HELDOUT
    training = ClipTrainingConfig()
    assert (asset["model"], asset["experiment"]) == (training.model, training.experiment)
    assert asset["regression_severity"] == entry.REGRESSION_SEVERITY
    assert ZeroShotSetConfig(name="z", path="p").format == datasets.ZEROSHOT_FORMAT
    assert RetrievalSetConfig(name="r", path="p").format == datasets.RETRIEVAL_FORMAT


def test_check_names_are_the_ones_the_process_reports():
    assert {spec.name for spec in eval_metrics.check_specs} == {entry.CHECK_FINITE, entry.CHECK_REGRESSION}


def test_paths_come_from_layout():
    s1, s2 = "CC-MAIN-2024-10", "CC-MAIN-2024-18"
    cfg = eval_config_for(EvalMetricsConfig(experiment="e", model="m").model_dump(), s2, [s2, s1], "/data/")
    assert cfg["output_dir"] == f"/data/{layout.evaluation_dir('e', 'm', s2)}"
    assert cfg["cache_dir"] == f"/data/{layout.evaluation_cache_dir('e', 'm')}"
    assert cfg["eval_sets"] == {s: f"/data/{layout.eval_set_dir(s)}" for s in (s1, s2)}
    assert cfg["checkpoints"][s1] == f"/data/{layout.training_run_dir('e', 'm', s1)}/final.pt"
    assert cfg["zeroshot"] == [{"name": HELDOUT, "path": cfg["eval_sets"][s2], "optional": True}]


def test_checkpoints_resolved_through_the_training_pointers_are_used():
    """The asset hands over each snapshot's current run version (training/plan.resolve_checkpoints): this
    snapshot's is required, earlier ones not trained drop out of the TiC-CLIP matrix."""
    s0, s1, s2 = "CC-MAIN-2023-50", "CC-MAIN-2024-10", "CC-MAIN-2024-18"
    request = EvalMetricsConfig(experiment="e", model="m").model_dump()
    keys = {s: layout.training_checkpoint_key("e", "m", s, f"v{s[-2:]}") for s in (s1, s2)}
    cfg = eval_config_for(request, s2, [s0, s1, s2], "/data/", checkpoint_keys=keys)
    assert cfg["checkpoint"] == f"/data/{keys[s2]}" and cfg["checkpoints"] == {s: f"/data/{keys[s]}" for s in (s1, s2)}
    assert set(cfg["eval_sets"]) == {s0, s1, s2}
    with pytest.raises(ValueError, match=f"materialize clip_checkpoint for {s2} first"):
        eval_config_for(request, s2, [s1, s2], "/data", checkpoint_keys={s1: keys[s1]})


def test_mlflow_store_rule_has_one_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = str(tmp_path / "data")
    expected = f"sqlite:///{tmp_path}/data/mlflow/mlflow.db"
    assert sqlite_store_uri(root) == expected
    assert TrainConfig(snapshot="s", output_dir=f"{root}/x", data_root=root).resolve_tracking_uri() == expected
    assert runner.resolve_tracking_uri(EvalConfig(checkpoint="c", data_root=root), None) == expected


@pytest.mark.slow
def test_code_location_loads_without_torch():
    """The asset configs read EvalConfig's defaults; that must not pull the model stack into the code server."""
    code = "import sys, metaclip_assets.definitions; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
