"""What the `eval_metrics` asset asks the evaluation process to do: its EvalConfig, with this snapshot's checkpoint,
the held-out splits and checkpoints of every snapshot up to this one (the TiC-CLIP matrix) and the output and cache
dirs, all under the data root as the process sees it. No Dagster, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metaclip_assets import layout
from metaclip_assets.evaluation.config import HELDOUT
from metaclip_assets.training.plan import checkpoint_path, earlier_snapshots


def eval_config_for(
    request: Mapping[str, Any],
    snapshot: str,
    registered: list[str],
    data_root: str,
    training_run_id: str | None = None,
    checkpoint_keys: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The evaluation process's config from `request` (the asset's config fields, nested sets as dicts). Files
    that do not exist (snapshots not trained yet, no held-out split) are left out by the process, which is the side
    that can see them. '{data_root}' in a set's paths becomes the root.

    `checkpoint_keys`: {snapshot: checkpoint key under the data root} as resolved through the training pointers
    (training/plan.resolve_checkpoints; it must hold `snapshot`, earlier ones not trained are left out); None: the
    layout before versioned run dirs."""
    root = data_root.rstrip("/")
    experiment, model = request["experiment"], request["model"]
    upto = [*earlier_snapshots(snapshot, registered), snapshot]
    if checkpoint_keys is None:
        checkpoints = {s: checkpoint_path(root, experiment, model, s) for s in upto}
    elif snapshot not in checkpoint_keys:
        raise ValueError(f"no checkpoint given for {snapshot}: materialize clip_checkpoint for {snapshot} first")
    else:
        checkpoints = {s: f"{root}/{checkpoint_keys[s]}" for s in upto if s in checkpoint_keys}
    eval_sets = {s: f"{root}/{layout.eval_set_dir(s)}" for s in upto}

    def sub(path: str | None) -> str | None:
        return path.replace("{data_root}", root) if path else path

    zeroshot = [{"name": HELDOUT, "path": eval_sets[snapshot], "optional": True}] if request["heldout"] else []
    for z in request["zeroshot"]:
        zeroshot.append(
            {**z, "path": sub(z["path"]), "classnames": sub(z["classnames"]), "templates": sub(z["templates"])}
        )
    retrieval = [{**r, "path": sub(r["path"]), "image_dir": sub(r["image_dir"])} for r in request["retrieval"]]
    return {
        "checkpoint": checkpoints[snapshot],
        "snapshot": snapshot,
        "output_dir": f"{root}/{layout.evaluation_dir(experiment, model, snapshot)}",
        "cache_dir": f"{root}/{layout.evaluation_cache_dir(experiment, model)}",
        "zeroshot": zeroshot,
        "retrieval": retrieval,
        "checkpoints": checkpoints,
        "eval_sets": eval_sets if request["time_matrix"] else {},
        "time_matrix": request["time_matrix"],
        "matrix_metric": request["matrix_metric"],
        "regression_dataset": request["regression_dataset"],
        "regression_metric": request["regression_metric"],
        "regression_margin": request["regression_margin"],
        "batch_size": request["batch_size"],
        "workers": request["workers"],
        "device": request["device"],
        "threads": request["threads"],
        "data_root": root,
        "experiment": experiment,
        "training_run_id": training_run_id,
        "separate_run": request["separate_mlflow_run"],
        "mlflow_ui_url": request["mlflow_ui_url"],
    }
