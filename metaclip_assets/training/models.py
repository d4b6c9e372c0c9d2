"""open_clip models: MetaCLIP's quickgelu ViTs from open_clip's registry, plus our tiny CPU config."""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
TINY_MODEL = "tiny-clip"
SUPPORTED = ("ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu", TINY_MODEL)

_registered = False


def register_model_configs() -> None:
    """Add the package's JSON configs (file stem = model name) to open_clip's registry, once."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def build(name: str, device: torch.device):
    """(model, train transform, tokenizer) from open_clip; random init (MetaCLIP trains from scratch)."""
    register_model_configs()
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {name!r}; MetaCLIP's are {SUPPORTED[:3]}, tests use {TINY_MODEL!r}")
    model, preprocess_train, _ = open_clip.create_model_and_transforms(name, pretrained=None, device=device)
    return model, preprocess_train, open_clip.get_tokenizer(name)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip_train's split: no weight decay on gains, biases, norms and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
