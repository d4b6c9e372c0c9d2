"""Metric math on embeddings and scores: no model, no files, so it is checked on hand-built inputs.

Ties count against the model ("pessimistic" ranking): a candidate that scores *equal* to the right answer ranks
ahead of it. A collapsed model whose embeddings are all the same then gets recall 0 instead of whatever the
index order of `torch.topk` happens to give, so a broken checkpoint cannot look good by accident. NaN scores
rank as -inf for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

RETRIEVAL_KS = (1, 5, 10)


def class_weights(template_embeddings: torch.Tensor) -> torch.Tensor:
    """[classes, templates, dim] text embeddings -> [classes, dim] zero-shot classifier.

    OpenAI's prompt ensembling (and open_clip's `build_zero_shot_classifier`): L2-normalise each template's
    embedding, average over templates, L2-normalise the mean.
    """
    if template_embeddings.ndim != 3:
        raise ValueError(f"expected [classes, templates, dim], got shape {tuple(template_embeddings.shape)}")
    per_template = F.normalize(template_embeddings.float(), dim=-1)
    return F.normalize(per_template.mean(dim=1), dim=-1)


def beaten_by(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """For each row of `scores` [queries, candidates]: how many non-positive candidates score >= the best
    positive one. Correct at k  <=>  beaten_by < k."""
    if scores.shape != positive.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positive mask {tuple(positive.shape)} differ")
    if not bool(positive.any(dim=1).all()):
        raise ValueError("every query needs at least one positive candidate")
    s = torch.nan_to_num(scores.float(), nan=-math.inf)
    best = s.masked_fill(~positive, -math.inf).max(dim=1).values
    return ((s >= best[:, None]) & ~positive).sum(dim=1)


def zero_shot_metrics(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (k capped at the number of classes, as clip_benchmark) and mean per-class recall
    (balanced accuracy: top-1 recall averaged over the classes that have samples)."""
    n, c = logits.shape
    if n == 0:
        raise ValueError("no samples to score")
    labels = labels.long()
    positive = F.one_hot(labels, c).bool()
    rank = beaten_by(logits, positive)
    out: dict[str, float] = {}
    for k in ks:
        out[f"top{k}"] = (rank < min(k, c)).float().mean().item()
    correct = (rank < 1).float()
    present = torch.bincount(labels, minlength=c) > 0
    per_class = torch.zeros(c).index_add_(0, labels, correct) / torch.bincount(labels, minlength=c).clamp(min=1)
    out["mean_per_class_recall"] = per_class[present].mean().item()
    out["n_samples"] = float(n)
    out["n_classes"] = float(c)
    out["chance_top1"] = 1.0 / c
    return out


def retrieval_metrics(
    image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor, ks: Sequence[int] = RETRIEVAL_KS
) -> dict[str, float]:
    """Image->text and text->image recall@k on (image, several captions) sets, COCO/Flickr style.

    `text_image[t]` is the index of the image caption t belongs to. An image query is correct at k when any
    of its captions is in the top k texts; a caption query when its image is in the top k images. Embeddings
    are L2-normalised here, so cosine similarity is the score.
    """
    if text_emb.shape[0] != text_image.shape[0]:
        raise ValueError("one image index per caption is needed")
    sim = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T  # [images, texts]
    owner = text_image.long()
    i2t_pos = owner[None, :] == torch.arange(sim.shape[0])[:, None]
    i2t = beaten_by(sim, i2t_pos)
    t2i = beaten_by(sim.T, i2t_pos.T)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = (i2t < k).float().mean().item()
    for k in ks:
        out[f"t2i_r{k}"] = (t2i < k).float().mean().item()
    out["n_images"] = float(sim.shape[0])
    out["n_texts"] = float(sim.shape[1])
    return out


# Metrics that are fractions (checked to lie in [0, 1]); counts and chance levels are reported beside them.
def is_rate(name: str) -> bool:
    return name.startswith(("top", "i2t_r", "t2i_r", "chance_")) or name == "mean_per_class_recall"
