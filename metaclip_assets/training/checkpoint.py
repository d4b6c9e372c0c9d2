"""Checkpoints: written atomically (temp file + fsync + os.replace), loadable with torch's weights_only=True.

`checkpoints/latest.pt` is the periodic, resumable state (model, optimizer, scaler, step, samples seen, RNG, config);
`final.pt` is what the next snapshot warm-starts from and what the asset points at (model weights + facts).
RNG states are stored as tensors and lists, not pickled objects, so loading never needs to unpickle code.

Both are in open_clip_train's layout: the weights under `state_dict` (what open_clip's `load_checkpoint` reads, so
`open_clip.create_model_and_transforms(arch, pretrained=path)` loads them); our facts (`model_name` = the
architecture, `step`, `config`, ...) ride along. Checkpoints of earlier
versions kept the weights under `model`: `model_state` reads both.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from metaclip_assets.training.config import FINAL, LATEST

__all__ = ["FINAL", "LATEST", "load", "model_name", "model_state", "rng_state", "save_atomic", "set_rng_state"]


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """A reader (or a resumed run) sees the old file or the new one, never half of one, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash of the machine
    finally:
        os.close(dir_fd)
    return path


def remove_stale_temps(path: Path) -> None:
    """`.<name>.tmp-<pid>` files beside `path` whose writer is gone (kill -9 mid-save): the next save clears them.
    (storage.py does the same for the data root's files; the training image does not ship it.)"""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:
                pass


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def model_state(state: dict) -> dict:
    """The model weights of a checkpoint in either layout (open_clip's `state_dict`, or `model` before it), with a
    DistributedDataParallel `module.` prefix removed as open_clip does."""
    weights = state.get("state_dict", state.get("model"))
    if not isinstance(weights, dict):
        raise ValueError("checkpoint holds no model weights (expected a 'state_dict' or 'model' entry)")
    if weights and next(iter(weights)).startswith("module."):
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


def model_name(state: dict) -> str | None:
    """The open_clip architecture a checkpoint was trained as (open_clip_train's own checkpoints do not say: its
    `name` is the run's name, so the caller must then be told the architecture)."""
    return state.get("model_name") or (state.get("config") or {}).get("model")


def rng_state() -> dict:
    version, internal, gauss = random.getstate()
    state = {"python": {"version": version, "internal": list(internal), "gauss": gauss}, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
