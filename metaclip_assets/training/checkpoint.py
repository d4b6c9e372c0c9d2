"""Checkpoints: written atomically (temp file + fsync + os.replace), loadable with torch's weights_only=True.

`checkpoints/latest.pt` is the periodic, resumable state (model, optimizer, scaler, step, samples seen, RNG, config);
`final.pt` is what the next snapshot warm-starts from and what the asset points at (model weights + facts).
RNG states are stored as tensors and lists, not pickled objects, so loading never needs to unpickle code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from metaclip_assets.training.config import FINAL, LATEST

__all__ = ["FINAL", "LATEST", "load", "rng_state", "save_atomic", "set_rng_state"]


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """A reader (or a resumed run) sees the old file or the new one, never half of one, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


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
