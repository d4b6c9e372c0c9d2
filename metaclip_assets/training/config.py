"""The training config: one JSON-serialisable dataclass, shared by the entry point, the asset and the tests.

Defaults are OpenAI's CLIP recipe as used by MetaCLIP (metaclip-facts.md section 5): AdamW(0.9, 0.98, eps 1e-6),
weight decay 0.2 (not on gains, biases, norms, logit_scale), cosine schedule with linear warmup, lr 5e-4 for
B-sized models and 4e-4 for L and larger, AMP on GPU, shards resampled with replacement, budget in samples seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from metaclip_assets import layout
from metaclip_assets.training.tracking import sqlite_store_uri

STRATEGIES = ("cumulative", "restricted", "sequential", "from_scratch")
PRECISIONS = ("auto", "amp", "amp_bf16", "fp32")
# Model names whose recipe lr is 4e-4 (MetaCLIP: L/14, H/14, bigG/14); everything else gets 5e-4.
LARGE_MODEL_MARKERS = ("-L-", "-H-", "-bigG-", "-g-")
OPENAI_WARMUP_STEPS = 2000
# Files in output_dir (named in layout.py; re-exported here for the trainer).
FINAL = layout.FINAL_CHECKPOINT
LATEST = layout.LATEST_CHECKPOINT

# Fields that do not change what is trained: a checkpoint written under other values of these can be resumed.
OPERATIONAL_FIELDS = frozenset(
    {
        "threads",
        "workers",
        "log_every",
        "checkpoint_every",
        "tracking_uri",
        "mlflow_ui_url",
        "experiment",
        "data_card_paths",
        "log_checkpoint_artifact",
        "device",
        "progress_every_s",
    }
)


@dataclass
class TrainConfig:
    snapshot: str
    output_dir: str
    # Data: this snapshot's shards are `{shard_root}/{snapshot}/*.tar` unless `shard_urls` lists them
    # (any URL webdataset opens, e.g. "pipe:aws s3 cp s3://b/x.tar -" for object stores).
    shard_root: str | None = None
    shard_urls: list[str] = field(default_factory=list)
    # Older snapshots in time order; t = len(earlier_snapshots). Their shards are `{shard_root}/{s}/*.tar`.
    earlier_snapshots: list[str] = field(default_factory=list)
    model: str = "tiny-clip"
    # TiC-CLIP: cumulative (warm start + all older shards, mixed at replay_ratio), restricted (warm start + a
    # fixed replay buffer of replay_buffer_samples), sequential (warm start, new data only), from_scratch
    # (random init + all data up to t: TiC's "Oracle", to compare against).
    strategy: str = "cumulative"
    warm_start_from: str | None = None
    replay_ratio: float | None = 0.5  # share of old samples in each batch; None: proportional to shard counts
    replay_buffer_samples: int = 10_000
    batch_size: int = 256  # per process: under torchrun the global batch is batch_size x world size
    samples_budget: int = 1_000_000
    lr: float | None = None
    warmup_steps: int | None = None  # None: min(2000, 10% of the steps); always 0 when warm-started
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip_norm: float | None = None
    precision: str = "auto"  # auto = amp (fp16 autocast + GradScaler) on CUDA, fp32 on CPU
    device: str = "auto"
    threads: int | None = None  # torch.set_num_threads; None keeps torch's default
    workers: int = 0  # DataLoader workers, each with its own resampled shard stream
    shuffle_buffer: int = 1000
    seed: int = 0
    checkpoint_every: int = 500  # optimizer steps between periodic (resumable) checkpoints
    log_every: int = 10
    progress_every_s: float = 30.0
    experiment: str = "metaclip"
    # None: $MLFLOW_TRACKING_URI, else tracking.sqlite_store_uri(data_root); "none" disables tracking.
    tracking_uri: str | None = None
    data_root: str | None = None
    mlflow_ui_url: str | None = None  # where the MLflow UI of a sqlite store is served (for run links)
    data_card_paths: list[str] = field(default_factory=list)
    log_checkpoint_artifact: bool = False  # upload final.pt to MLflow (else: a reference to its path)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch_size <= 0 or self.samples_budget < self.batch_size:
            raise ValueError(f"need 0 < batch_size <= samples_budget, got {self.batch_size}, {self.samples_budget}")
        if "://" in self.output_dir:  # a local folder named "s3:" would be created instead, outside the data root
            raise ValueError(
                f"output_dir {self.output_dir!r} is a URL: checkpoints are written to a filesystem path. With an "
                "object-store data root, set training_launcher.data_root to a mounted path (a PVC, a local folder)"
            )
        if self.replay_ratio is not None and not 0.0 <= self.replay_ratio < 1.0:
            raise ValueError(f"replay_ratio must be in [0, 1), got {self.replay_ratio}")

    # ---- derived values --------------------------------------------------------------------------------
    @property
    def t(self) -> int:
        return len(self.earlier_snapshots)

    @property
    def total_steps(self) -> int:
        return self.total_steps_for(1)

    def total_steps_for(self, world_size: int) -> int:
        """Optimizer steps to the budget when `world_size` processes each take `batch_size` samples per step."""
        return math.ceil(self.samples_budget / (self.batch_size * world_size))

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 4e-4 if any(m in self.model for m in LARGE_MODEL_MARKERS) else 5e-4

    @property
    def warm_started(self) -> bool:
        return self.strategy != "from_scratch" and self.warm_start_from is not None

    @property
    def effective_warmup(self) -> int:
        return self.warmup_for(1)

    def warmup_for(self, world_size: int) -> int:
        total = self.total_steps_for(world_size)
        if self.warm_started:  # TiC-CLIP: continue from the previous model, fresh cosine, no warmup
            return 0
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total)
        return min(OPENAI_WARMUP_STEPS, total // 10)

    def resolve_tracking_uri(self) -> str | None:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if uri == "none":
            return None
        if uri:
            return uri
        return sqlite_store_uri(self.data_root or os.path.dirname(os.path.abspath(self.output_dir)))

    # ---- (de)serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:  # a typo in a key must not silently fall back to a default
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**data)

    def fingerprint(self) -> str:
        """Hash of everything that defines the training (not how it is run): resume only into the same training."""
        defining = {k: v for k, v in self.to_dict().items() if k not in OPERATIONAL_FIELDS}
        return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """open_clip_train's cosine_lr: linear warmup to base_lr, then cosine to 0 at `total` (min ratio 0)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base_lr
