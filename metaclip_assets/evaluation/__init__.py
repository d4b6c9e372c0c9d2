"""Evaluation of CLIP checkpoints: zero-shot classification (prompt ensembles), image-text retrieval and
TiC-CLIP's per-time-period matrix, logged to MLflow. Plain Python (no Dagster); `python -m
metaclip_assets.evaluation` is the entry point the `eval_metrics` asset launches through Dagster Pipes. Must not
import `sample`, `defs` or Dagster (only `dagster-pipes`)."""

from metaclip_assets.evaluation.config import EvalConfig

__all__ = ["EvalConfig"]
