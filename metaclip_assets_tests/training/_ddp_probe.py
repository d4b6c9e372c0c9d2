"""Run under torchrun (or as one plain process) by test_distributed.py: train a few steps of our Trainer on FIXED
global batches, each rank taking its slice, and record after every step what the tests compare.

    python -m metaclip_assets_tests.training._ddp_probe CONFIG_JSON OUT_DIR GLOBAL_BATCH STEPS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from metaclip_assets.training import distributed
from metaclip_assets.training.config import TrainConfig
from metaclip_assets.training.loop import Trainer


def global_batches(tokenizer, global_batch: int, steps: int):
    """The same batches in every process: seeded images and captions."""
    g = torch.Generator().manual_seed(1234)
    words = ["red", "green", "blue", "circle", "square", "dog", "cat", "sky", "tree", "car", "house", "boat"]
    for _ in range(steps):
        images = torch.rand(global_batch, 3, 32, 32, generator=g)
        idx = torch.randint(len(words), (global_batch, 3), generator=g).tolist()
        yield images, tokenizer([" ".join(words[i] for i in row) for row in idx])


def main(config_path: str, out_dir: str, global_batch: int, steps: int) -> None:
    cfg = TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
    trainer = Trainer(cfg, log=lambda m: None).prepare()
    rank, world = trainer.group.rank, trainer.group.world_size
    local = global_batch // world
    records = []

    def my_slices():
        for k, (images, tokens) in enumerate(global_batches(trainer.tokenizer, global_batch, steps)):
            if k:  # asked for batch k: step k's update is done, record it (the last one is recorded below)
                records.append(snapshot(trainer))
            yield images[rank * local : (rank + 1) * local], tokens[rank * local : (rank + 1) * local]

    result = trainer.run(batches=my_slices())
    records.append(snapshot(trainer))
    torch.save({"records": records, "result": result}, Path(out_dir) / f"rank{rank}.pt")
    distributed.shutdown()


def snapshot(trainer) -> dict:
    """A compact, exact fingerprint of the weights: per tensor, its float64 sum and sum of squares."""
    with torch.no_grad():
        return {
            "step": trainer.step,
            "params": torch.stack(
                [torch.stack([p.double().sum(), (p.double() ** 2).sum()]) for p in trainer.model.parameters()]
            ),
        }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
