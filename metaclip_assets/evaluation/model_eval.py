"""Running a checkpoint: load it with the training package's helpers, encode images and texts, score eval sets."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from PIL import Image

from metaclip_assets.evaluation import metrics
from metaclip_assets.evaluation.datasets import WDS_IMAGE_KEYS, RetrievalSet, ZeroShotSet, fill
from metaclip_assets.training import checkpoint, models


@dataclass
class LoadedModel:
    model: torch.nn.Module
    preprocess: object  # open_clip's eval transform (resize shortest side, centre crop, normalise)
    tokenizer: object
    name: str
    step: int | None
    device: torch.device
    path: str
    train_config: dict | None = None  # the TrainConfig the checkpoint was trained with


def pick_device(spec: str = "cpu") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def load_model(path: str | os.PathLike, device: torch.device) -> LoadedModel:
    """`final.pt` (model_name + model) or a resumable `latest.pt` (config + model) from the training package."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    state = checkpoint.load(path, map_location="cpu")
    name = state.get("model_name") or state.get("config", {}).get("model")
    if not name:
        raise ValueError(f"{path}: checkpoint names no model (expected 'model_name' or config.model)")
    model, _, tokenizer = models.build(name, device)
    model.load_state_dict(state["model"])
    model.eval()
    # The train transform models.build returns augments; evaluation uses open_clip's deterministic one.
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return LoadedModel(model, preprocess, tokenizer, name, state.get("step"), device, str(path), state.get("config"))


def _load_image(path: str) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


class _Folder(torch.utils.data.Dataset):
    def __init__(self, samples, preprocess):
        self.samples, self.preprocess = samples, preprocess

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.preprocess(_load_image(path)), label


def _label(y) -> int:
    return int(y.decode() if isinstance(y, bytes) else y)


def _wds_pipeline(shards: list[str], preprocess, batch_size: int):
    """Each shard is read once, in order (no resampling: every eval sample counts exactly once)."""
    import webdataset as wds

    return wds.DataPipeline(
        wds.SimpleShardList(shards),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        wds.decode("pilrgb"),
        wds.to_tuple(WDS_IMAGE_KEYS, "cls"),
        wds.map_tuple(preprocess, _label),
        wds.batched(batch_size, partial=True),
    )


@torch.no_grad()
def encode_images(lm: LoadedModel, batches) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for images, ys in batches:
        feats.append(lm.model.encode_image(images.to(lm.device), normalize=True).float().cpu())
        labels.append(torch.as_tensor(ys))
    if not feats:
        raise ValueError("no images decoded")
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def encode_texts(lm: LoadedModel, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = lm.tokenizer(texts[i : i + batch_size]).to(lm.device)
        out.append(lm.model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(out)


def classifier(lm: LoadedModel, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """[classes, dim]: every class name in every template, ensembled as OpenAI did."""
    texts = [fill(t, c) for c in classnames for t in templates]
    emb = encode_texts(lm, texts).reshape(len(classnames), len(templates), -1)
    return metrics.class_weights(emb)


def _nonfinite(*tensors: torch.Tensor) -> int:
    return int(sum((~torch.isfinite(t)).any(dim=-1).sum().item() for t in tensors))


def zero_shot(lm: LoadedModel, ds: ZeroShotSet, batch_size: int = 64, workers: int = 0) -> dict[str, float]:
    if ds.kind == "folder":
        loader = torch.utils.data.DataLoader(
            _Folder(ds.samples, lm.preprocess), batch_size=batch_size, num_workers=workers
        )
    else:
        loader = torch.utils.data.DataLoader(
            _wds_pipeline(ds.shards, lm.preprocess, batch_size), batch_size=None, num_workers=workers
        )
    image_feats, labels = encode_images(lm, loader)
    if int(labels.max()) >= len(ds.classnames) or int(labels.min()) < 0:
        raise ValueError(f"{ds.name}: label {int(labels.max())} outside the {len(ds.classnames)} class names")
    weights = classifier(lm, ds.classnames, ds.templates)
    result = metrics.zero_shot_metrics(image_feats @ weights.T, labels)
    result["nonfinite_embeddings"] = float(_nonfinite(image_feats, weights))
    return result


def retrieval(lm: LoadedModel, ds: RetrievalSet, batch_size: int = 64, workers: int = 0) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(
        _Folder([(p, i) for i, p in enumerate(ds.images)], lm.preprocess), batch_size=batch_size, num_workers=workers
    )
    image_feats, _ = encode_images(lm, loader)
    texts, owner = ds.flat()
    text_feats = encode_texts(lm, texts)
    result = metrics.retrieval_metrics(image_feats, text_feats, torch.tensor(owner))
    result["nonfinite_embeddings"] = float(_nonfinite(image_feats, text_feats))
    return result
