"""Running a model: load it (ours, open_clip's or open_clip_train's), encode images and texts, score eval sets."""

from __future__ import annotations

import glob
import logging
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


LOCAL_DIR = "local-dir:"  # open_clip's schema for its hub layout on disk
OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pth")  # what open_clip looks for in such a folder


def load_model(path: str | os.PathLike, device: torch.device, arch: str | None = None) -> LoadedModel:
    """Every model we evaluate, offline, goes through here:
    - `local-dir:DIR` (or a DIR with `open_clip_config.json`): open_clip's hub layout (`model_cfg` +
      `preprocess_cfg`, weights beside it), loaded by open_clip itself; the architecture needs no registration.
    - a checkpoint file of ours (`final.pt`, a resumable `latest.pt`; weights under `state_dict`, or `model` in
      earlier versions): it names its architecture.
    - any other open_clip checkpoint with `arch`: open_clip_train's (`{'epoch', 'name', 'state_dict', ...}`, keys
      maybe `module.`-prefixed; its `name` is the run's name, not the architecture), a bare state dict or a
      `.safetensors` file (open_clip's released weights).
    """
    spec = str(path)
    if spec.startswith(LOCAL_DIR) or os.path.isfile(os.path.join(spec, OPEN_CLIP_CONFIG)):
        return _load_local_dir(spec.removeprefix(LOCAL_DIR), device, arch)
    if not os.path.isfile(spec):
        raise FileNotFoundError(f"{spec}: no such checkpoint file (a model is local-dir:DIR or a checkpoint file)")
    if spec.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = {"state_dict": load_file(spec)}
    else:
        state = checkpoint.load(spec, map_location="cpu")
        if "state_dict" not in state and "model" not in state and all(torch.is_tensor(v) for v in state.values()):
            state = {"state_dict": state}  # a bare state dict
    named = checkpoint.model_name(state)
    if arch and named and arch != named:
        raise ValueError(f"{spec} was trained as {named!r}, not {arch!r}: drop --arch or fix it")
    name = arch or named
    if not name:
        raise ValueError(
            f"{spec} does not name its architecture (open_clip_train's 'name' is the run's name): pass --arch NAME, "
            f"e.g. --arch {models.SUPPORTED[0]}"
        )
    logging.disable(logging.WARNING)  # open_clip's "initialized randomly": the weights are loaded right below
    try:
        model, _, tokenizer = models.build(name, device)
    finally:
        logging.disable(logging.NOTSET)
    model.load_state_dict(checkpoint.model_state(state))
    return _loaded(model, tokenizer, name, state.get("step"), device, spec, state.get("config"))


def _load_local_dir(folder: str, device: torch.device, arch: str | None) -> LoadedModel:
    import open_clip

    if arch:
        raise ValueError(f"--arch is for checkpoint files: local-dir:{folder} names its model in {OPEN_CLIP_CONFIG}")
    if not os.path.isfile(os.path.join(folder, OPEN_CLIP_CONFIG)):
        raise FileNotFoundError(
            f"{folder}: no {OPEN_CLIP_CONFIG} (open_clip's hub layout; `metaclip-assets export CHECKPOINT --to "
            "open_clip --out DIR` writes one)"
        )
    if not any(glob.glob(os.path.join(folder, pattern)) for pattern in WEIGHT_FILES):
        # open_clip would only warn and evaluate a random model
        raise FileNotFoundError(f"{folder}: no weights ({', '.join(WEIGHT_FILES)}) beside {OPEN_CLIP_CONFIG}")
    spec = LOCAL_DIR + folder
    model, _, _ = open_clip.create_model_and_transforms(spec, device=device)
    return _loaded(model, open_clip.get_tokenizer(spec), spec, None, device, spec, None)


def _loaded(model, tokenizer, name, step, device, path, train_config) -> LoadedModel:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    model.eval()
    # Evaluation uses open_clip's deterministic transform (resize, centre crop), never the augmenting train one.
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return LoadedModel(model, preprocess, tokenizer, name, step, device, path, train_config)


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
    return zero_shot_per_class(lm, ds, batch_size, workers)[0]


def zero_shot_per_class(
    lm: LoadedModel, ds: ZeroShotSet, batch_size: int = 64, workers: int = 0
) -> tuple[dict[str, float], dict[str, float]]:
    """The set's metrics, and top-1 recall of every class that has samples, keyed by `ds.class_keys()`."""
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
    logits = image_feats @ weights.T
    result = metrics.zero_shot_metrics(logits, labels)
    result["nonfinite_embeddings"] = float(_nonfinite(image_feats, weights))
    # Same ranking as the top-1 above (ties count against the model).
    correct = metrics.beaten_by(logits, torch.nn.functional.one_hot(labels.long(), len(ds.classnames)).bool()) < 1
    keys = ds.class_keys()
    per_class = {keys[c]: correct[labels == c].float().mean().item() for c in sorted(set(labels.tolist()))}
    return result, per_class


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
