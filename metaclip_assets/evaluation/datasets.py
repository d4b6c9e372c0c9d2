"""Evaluation data: class names and prompt templates, zero-shot sets (image folder or webdataset), retrieval sets.

Formats, as users bring them:
- image folder: `<root>/<class>/<image>` (ImageNet val layout). Folder names are matched to class names by
  name, else by sorted position (ImageNet's wnid folders sort into the standard class index order).
- webdataset: tar shards of `<key>.{jpg,png,webp}` + `<key>.cls` (integer label), clip_benchmark's layout.
- class names / templates: a JSON list, a JSON object keyed by dataset (clip_benchmark's `en_classnames.json`,
  `en_zeroshot_classification_templates.json`; pick with `*_key`), or a text file with one per line.
  "openai_imagenet" means open_clip's copy of OpenAI's 1000 ImageNet names / 80 templates.
- retrieval: JSON lines `{"image": <path, relative to the file>, "captions": [...]}`, or COCO's
  `captions_*.json` with the image directory beside it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ZEROSHOT_FORMAT = "folder"  # a set's format when its spec names none ('wds' is the other)
RETRIEVAL_FORMAT = "jsonl"  # ('coco' is the other)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPEG")
WDS_IMAGE_KEYS = "jpg;jpeg;png;webp"
OPENAI_IMAGENET = "openai_imagenet"
# Files a dataset may carry beside its images (the sample's eval split does; clip_benchmark's wds sets do).
CLASSNAME_FILES = ("classnames.json", "classnames.txt")
TEMPLATE_FILES = ("templates.json", "zeroshot_classification_templates.txt", "templates.txt")


# ---- class names and templates ----------------------------------------------------------------------------
def _read_list(path: str | os.PathLike, key: str | None) -> list[str]:
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            if key is None:
                raise ValueError(f"{path} holds several datasets ({', '.join(sorted(data))[:200]}): set a key")
            if key not in data:
                raise KeyError(f"{path} has no entry {key!r}")
            data = data[key]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"{path}: expected a list of strings")
        return data
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def openai_imagenet() -> tuple[list[str], list[str]]:
    """OpenAI's ImageNet class names and 80 templates as shipped by open_clip (templates are lambdas there)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return list(IMAGENET_CLASSNAMES), [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]


def load_classnames(
    spec: str | None, key: str | None = None, root: str | os.PathLike | None = None
) -> list[str] | None:
    if spec == OPENAI_IMAGENET:
        return openai_imagenet()[0]
    if spec:
        return _read_list(spec, key)
    for name in CLASSNAME_FILES:  # shipped with the dataset
        if root is not None and (Path(root) / name).is_file():
            return _read_list(Path(root) / name, key)
    return None


def load_templates(spec: str | None, key: str | None = None, root: str | os.PathLike | None = None) -> list[str]:
    """Default: the templates shipped with the dataset, else OpenAI's 80 ImageNet templates."""
    if spec and spec != OPENAI_IMAGENET:
        templates = _read_list(spec, key)
    elif spec is None and root is not None and any((Path(root) / n).is_file() for n in TEMPLATE_FILES):
        templates = _read_list(next(Path(root) / n for n in TEMPLATE_FILES if (Path(root) / n).is_file()), key)
    else:
        templates = openai_imagenet()[1]
    if not templates:
        raise ValueError("no prompt templates")
    return templates


def fill(template: str, classname: str) -> str:
    """clip_benchmark templates use `{c}`, OpenAI's notebook and the sample use `{}`."""
    return template.replace("{c}", classname) if "{c}" in template else template.format(classname)


# ---- zero-shot sets ---------------------------------------------------------------------------------------------
@dataclass
class ZeroShotSet:
    name: str
    classnames: list[str]
    templates: list[str]
    samples: list[tuple[str, int]] = field(default_factory=list)  # image folder: (path, label)
    shards: list[str] = field(default_factory=list)  # webdataset
    source: str = ""

    @property
    def kind(self) -> str:
        return "wds" if self.shards else "folder"


def image_folder(
    root: str | os.PathLike, classnames: list[str] | None, max_per_class: int | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    root = Path(root)
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not dirs:
        raise FileNotFoundError(f"{root}: no class folders (expected <root>/<class>/<image>)")
    if classnames is None:
        classnames = [d.replace("_", " ") for d in dirs]
    if set(dirs) <= set(classnames):
        label_of = {d: classnames.index(d) for d in dirs}
    elif len(dirs) == len(classnames):
        label_of = {d: i for i, d in enumerate(dirs)}
    else:
        raise ValueError(
            f"{root}: {len(dirs)} class folders do not match {len(classnames)} class names "
            "(neither by name nor by count)"
        )
    samples = []
    for d in dirs:
        files = sorted(p for p in (root / d).iterdir() if p.suffix in IMAGE_SUFFIXES)
        samples += [(str(p), label_of[d]) for p in files[:max_per_class]]
    if not samples:
        raise FileNotFoundError(f"{root}: no images")
    return samples, classnames


def shard_list(spec: str | list[str]) -> list[str]:
    """A directory (its *.tar), a glob, a brace pattern (`x-{000..009}.tar`) or a list."""
    if isinstance(spec, list):
        return spec
    if os.path.isdir(spec):
        return sorted(glob.glob(os.path.join(spec, "*.tar")))
    if "{" in spec:
        import braceexpand

        return list(braceexpand.braceexpand(spec))
    return sorted(glob.glob(spec)) or [spec]


def zero_shot_set(
    name: str,
    path: str,
    fmt: str = ZEROSHOT_FORMAT,
    classnames: str | None = None,
    classnames_key: str | None = None,
    templates: str | None = None,
    templates_key: str | None = None,
    max_per_class: int | None = None,
) -> ZeroShotSet:
    root = path if os.path.isdir(path) else os.path.dirname(path)
    names = load_classnames(classnames, classnames_key, root)
    prompts = load_templates(templates, templates_key, root)
    if fmt == "folder":
        samples, names = image_folder(path, names, max_per_class)
        return ZeroShotSet(name, names, prompts, samples=samples, source=str(path))
    if fmt == "wds":
        if names is None:
            raise ValueError(f"{name}: a webdataset needs class names (classnames file or {CLASSNAME_FILES})")
        shards = shard_list(path)
        if not shards or not all("://" in s or s.startswith("pipe:") or os.path.isfile(s) for s in shards):
            raise FileNotFoundError(f"{name}: no shards at {path}")
        return ZeroShotSet(name, names, prompts, shards=shards, source=str(path))
    raise ValueError(f"{name}: format must be 'folder' or 'wds', got {fmt!r}")


# ---- retrieval sets ---------------------------------------------------------------------------------------------
@dataclass
class RetrievalSet:
    name: str
    images: list[str]
    captions: list[list[str]]
    source: str = ""

    def flat(self) -> tuple[list[str], list[int]]:
        """All captions, and for each the index of its image."""
        texts, owner = [], []
        for i, caps in enumerate(self.captions):
            texts += caps
            owner += [i] * len(caps)
        return texts, owner


def retrieval_set(
    name: str, path: str, fmt: str = RETRIEVAL_FORMAT, image_dir: str | None = None, max_images: int | None = None
) -> RetrievalSet:
    path_ = Path(path)
    images: list[str] = []
    captions: list[list[str]] = []
    if fmt == "jsonl":
        for line in path_.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                caps = [row["captions"]] if isinstance(row["captions"], str) else list(row["captions"])
                images.append(str((Path(image_dir) if image_dir else path_.parent) / row["image"]))
                captions.append(caps)
    elif fmt == "coco":
        data = json.loads(path_.read_text(encoding="utf-8"))
        by_image: dict[int, list[str]] = defaultdict(list)
        for ann in data["annotations"]:
            by_image[ann["image_id"]].append(ann["caption"].strip())
        folder = Path(image_dir) if image_dir else path_.parent.parent / "val2017"  # COCO's own layout
        for img in sorted(data["images"], key=lambda im: im["id"]):
            if by_image.get(img["id"]):
                images.append(str(folder / img["file_name"]))
                captions.append(by_image[img["id"]])
    else:
        raise ValueError(f"{name}: format must be 'jsonl' or 'coco', got {fmt!r}")
    images, captions = images[:max_images], captions[:max_images]
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{name}: {len(missing)} images missing, e.g. {missing[0]}")
    if not images or any(not c for c in captions):
        raise ValueError(f"{name}: need images, each with at least one caption")
    return RetrievalSet(name, images, captions, source=str(path))


def fingerprint(obj: ZeroShotSet | RetrievalSet) -> str:
    """Identity of an eval set for the result cache: its definition plus every file's (name, size, mtime)."""
    h = hashlib.sha256()
    if isinstance(obj, ZeroShotSet):
        h.update(json.dumps([obj.classnames, obj.templates, [(p, y) for p, y in obj.samples], obj.shards]).encode())
        files = [p for p, _ in obj.samples] + [s for s in obj.shards if os.path.isfile(s)]
    else:
        h.update(json.dumps([obj.images, obj.captions]).encode())
        files = obj.images
    for p in files:
        st = os.stat(p)
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
