"""CLIP training on curated webdataset shards: open_clip + OpenAI's recipe, resumable, continual (TiC-CLIP),
tracked in MLflow. Plain Python (no Dagster); `python -m metaclip_assets.training` is the entry point that the
`clip_checkpoint` asset launches through Dagster Pipes. Must not import `evaluation`, `sample`, `defs` or Dagster
(only `dagster-pipes`); the training image ships this package with settings.py and layout.py only."""

from metaclip_assets.training.config import STRATEGIES, TrainConfig, lr_at

__all__ = ["STRATEGIES", "TrainConfig", "lr_at"]
