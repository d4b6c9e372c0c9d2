"""What the `clip_checkpoint` asset asks the training process to do: its TrainConfig fields, with paths under the
data root as the process sees it, the snapshots before this one and the checkpoint to warm-start from.

Called by the asset in the Dagster process; plain Python, no Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metaclip_assets import layout
from metaclip_assets.training.config import FINAL, TrainConfig

# What the asset trains when its config leaves a field out: TrainConfig's recipe with a budget that suits the CPU
# sample in seconds (TrainConfig's own batch_size 256 and samples_budget 1,000,000 are for a run started by hand).
ASSET_DEFAULTS = TrainConfig(snapshot="", output_dir="", batch_size=64, samples_budget=6_400)


def checkpoint_path(data_root: str, experiment: str, model: str, snapshot: str) -> str:
    """Where the training of (experiment, model) on `snapshot` writes its final.pt."""
    return f"{data_root.rstrip('/')}/{layout.training_run_dir(experiment, model, snapshot)}/{FINAL}"


def train_config_for(recipe: Mapping[str, Any], snapshot: str, registered: list[str], data_root: str) -> dict:
    """The training process's config: `recipe` (the asset's config fields) plus paths as the process sees them,
    the snapshots before this one and the warm start (the previous snapshot's final.pt, unless from scratch)."""
    root = data_root.rstrip("/")
    experiment, model = recipe["experiment"], recipe["model"]
    earlier = sorted(s for s in registered if s < snapshot)  # snapshot ids sort in time order (CC-MAIN-YYYY-WW)
    warm = (
        checkpoint_path(root, experiment, model, earlier[-1])
        if earlier and recipe["strategy"] != "from_scratch"
        else None
    )
    return {
        **{k: v for k, v in recipe.items() if k != "shard_root"},
        "snapshot": snapshot,
        "earlier_snapshots": earlier,
        "shard_root": recipe.get("shard_root") or f"{root}/{layout.SHARDS_DIR}",
        "output_dir": f"{root}/{layout.training_run_dir(experiment, model, snapshot)}",
        "warm_start_from": warm,
        "data_root": data_root,
        "data_card_paths": [
            f"{root}/{layout.datacard_key(snapshot, name)}" for name in ("datacard.json", "summary.json")
        ],
    }
