"""Evaluation data: class names and prompt templates, zero-shot sets (image folder or webdataset), retrieval sets.

Formats, as users bring them:
- image folder: `<root>/<class>/<image>` (ImageNet val layout). A folder is labelled by its name, never by its
  position among the folders (a subset would be mislabelled): the class name it is called by (`_` read as a
  space), its entry in a `{folder: class name}` JSON object, or, for ImageNet-1k wnids (`n01440764`), its class
  by wnid (`imagenet.py`). Folders with no such name (wnid-like or digits-only, no class-name source) are an
  error that says what to pass, never prompts made of ids. The label space is every class of the class-name
  source given, else the classes present; `label_space` ('present' / 'full') overrides.
- webdataset: tar shards of `<key>.{jpg,png,webp}` + `<key>.cls` (integer label), clip_benchmark's layout.
- class names / templates: a JSON list, a JSON object keyed by dataset (clip_benchmark's `en_classnames.json`,
  `en_zeroshot_classification_templates.json`; pick with `*_key`), or a text file with one per line.
  "openai_imagenet" means open_clip's copy of OpenAI's 1000 ImageNet names / 80 templates. Class names may
  also be a JSON object `{folder: class name}` (string values).
- retrieval: JSON lines `{"image": <path, relative to the file>, "captions": [...]}`, or COCO's
  `captions_*.json` with the image directory beside it.
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from metaclip_assets.evaluation import imagenet

ZEROSHOT_FORMAT = "folder"  # a set's format when its spec names none ('wds' is the other)
RETRIEVAL_FORMAT = "jsonl"  # ('coco' is the other)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".JPEG")
WDS_IMAGE_KEYS = "jpg;jpeg;png;webp"
OPENAI_IMAGENET = "openai_imagenet"
# Files a dataset may carry beside its images (the sample's eval split does; clip_benchmark's wds sets do).
CLASSNAME_FILES = ("classnames.json", "classnames.txt")
TEMPLATE_FILES = ("templates.json", "zeroshot_classification_templates.txt", "templates.txt")
PRESENT, FULL = "present", "full"  # label spaces: the classes with a folder / every class of the name source
LABEL_SPACES = (PRESENT, FULL)


# ---- class names and templates ----------------------------------------------------------------------------
def _read_list(path: str | os.PathLike, key: str | None, mapping: bool = False) -> list[str] | dict[str, str]:
    """With `mapping`, a JSON object of strings is returned as it is ({folder: class name})."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and key is None and mapping and all(isinstance(v, str) for v in data.values()):
            return data
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


def _shipped(root: str | os.PathLike | None, names: tuple[str, ...]) -> Path | None:
    """The first of `names` beside the dataset's images."""
    return next((Path(root) / n for n in names if root is not None and (Path(root) / n).is_file()), None)


def _with_key(path: str | os.PathLike, key: str | None) -> str:
    return f"{path}[{key}]" if key else str(path)


def classnames_and_source(
    spec: str | None, key: str | None = None, root: str | os.PathLike | None = None
) -> tuple[list[str] | dict[str, str] | None, str]:
    """The class names (a list, or a {folder: class name} object) and where they came from; None: none given."""
    if spec == OPENAI_IMAGENET:
        return openai_imagenet()[0], imagenet.NAMES_SOURCE
    path = spec or _shipped(root, CLASSNAME_FILES)
    if path:
        return _read_list(path, key, mapping=True), _with_key(path, key)
    return None, ""


def load_classnames(
    spec: str | None, key: str | None = None, root: str | os.PathLike | None = None
) -> list[str] | dict[str, str] | None:
    return classnames_and_source(spec, key, root)[0]


def templates_and_source(
    spec: str | None, key: str | None = None, root: str | os.PathLike | None = None
) -> tuple[list[str], str]:
    """Default: the templates shipped with the dataset, else OpenAI's 80 ImageNet templates."""
    path = spec if spec != OPENAI_IMAGENET else None
    if spec is None:
        path = _shipped(root, TEMPLATE_FILES)
    if path:
        templates, source = _read_list(path, key), _with_key(path, key)
    else:
        templates, source = openai_imagenet()[1], "open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES"
    if not templates:
        raise ValueError(f"no prompt templates in {source}")
    return templates, source


def load_templates(spec: str | None, key: str | None = None, root: str | os.PathLike | None = None) -> list[str]:
    return templates_and_source(spec, key, root)[0]


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
    class_ids: list[str] = field(default_factory=list)  # per label: its wnid / folder / index
    label_space: str = FULL
    classnames_source: str = ""
    templates_source: str = ""

    @property
    def kind(self) -> str:
        return "wds" if self.shards else "folder"

    def class_keys(self) -> list[str]:
        """One key per label for per-class results: the class name, with its id where a name repeats (OpenAI's
        ImageNet names have 'missile' and 'sunglasses' twice)."""
        ids = self.class_ids or [str(i) for i in range(len(self.classnames))]
        seen = [n for n in self.classnames if self.classnames.count(n) > 1]
        return [f"{n} ({i})" if n in seen else n for n, i in zip(self.classnames, ids)]


@dataclass
class FolderClasses:
    label_of: dict[str, int]  # folder -> label
    names: list[str]  # label -> class name
    ids: list[str]  # label -> wnid / folder / the name itself
    label_space: str
    source: str


def _unresolved(root, folders: list[str], why: str) -> ValueError:
    return ValueError(
        f"{root}: {len(folders)} class folders ({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}) "
        f"{why}. Give a class-name source (`classnames`, CLI --classnames FILE): a JSON object "
        "{folder: class name}, or a list of the names the folders are called by"
    )


def folder_classes(
    root: str | os.PathLike,
    dirs: list[str],
    classnames: list[str] | dict[str, str] | None,
    label_space: str | None = None,
    source: str = "",
) -> FolderClasses:
    """Label each folder by its name (see the module docstring); never by its position."""
    if label_space not in (None, *LABEL_SPACES):
        raise ValueError(f"label_space must be one of {LABEL_SPACES}, got {label_space!r}")
    if isinstance(classnames, dict):
        missing = [d for d in dirs if d not in classnames]
        if missing:
            raise _unresolved(root, missing, f"have no entry in the class-name object {source}")
        ids, names = list(classnames), list(classnames.values())
        index = {d: ids.index(d) for d in dirs}
    elif classnames is not None:
        first: dict[str, int] = {}
        for i, c in enumerate(classnames):
            first.setdefault(c, i)
        index = {d: first.get(d, first.get(d.replace("_", " "))) for d in dirs}
        ids, names = list(classnames), list(classnames)
        if None in index.values() and len(classnames) == imagenet.N_CLASSES and imagenet.all_imagenet(dirs):
            # 1000 names and wnid folders: the names are in ImageNet-1k's class-index order (clip_benchmark's
            # and open_clip's lists are), so a folder's class is its wnid's index.
            index = {d: imagenet.index_of()[d] for d in dirs}
            ids, source = list(imagenet.wnids()), f"{source} by wnid ({imagenet.WNID_SOURCE})"
        missing = [d for d, i in index.items() if i is None]
        if missing:
            raise _unresolved(root, missing, f"are not among the {len(classnames)} class names of {source}")
    elif imagenet.all_imagenet(dirs):
        ids, names = list(imagenet.wnids()), list(imagenet.classnames())
        index = {d: imagenet.index_of()[d] for d in dirs}
        source = f"ImageNet-1k by wnid: {imagenet.WNID_SOURCE} + {imagenet.NAMES_SOURCE}"
    else:
        wnid_like = [d for d in dirs if imagenet.looks_like_wnid(d)]
        unknown = [d for d in wnid_like if d not in imagenet.index_of()]
        if unknown:
            raise _unresolved(root, unknown, "look like WordNet ids but are not ImageNet-1k classes")
        if wnid_like:  # never a wnid as a prompt
            other = [d for d in dirs if d not in wnid_like][:3]
            raise _unresolved(root, wnid_like, f"are ImageNet-1k wnids beside other folders ({', '.join(other)})")
        nameless = [d for d in dirs if not any(ch.isalpha() for ch in d)]
        if nameless:
            raise _unresolved(root, nameless, "are not class names")
        ids, names = list(dirs), [d.replace("_", " ") for d in dirs]
        index = {d: i for i, d in enumerate(dirs)}
        source, label_space = "folder names", PRESENT  # all there is
    space = label_space or (FULL if classnames is not None else PRESENT)
    if space == PRESENT:
        kept = sorted(set(index.values()))
        new = {old: i for i, old in enumerate(kept)}
        index, ids, names = {d: new[i] for d, i in index.items()}, [ids[i] for i in kept], [names[i] for i in kept]
    return FolderClasses(index, names, ids, space, source)


def image_folder(
    root: str | os.PathLike,
    classnames: list[str] | dict[str, str] | None,
    max_per_class: int | None = None,
    label_space: str | None = None,
    source: str = "",
) -> tuple[list[tuple[str, int]], FolderClasses]:
    root = Path(root)
    dirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not dirs:
        raise FileNotFoundError(f"{root}: no class folders (expected <root>/<class>/<image>)")
    classes = folder_classes(root, dirs, classnames, label_space, source)
    samples = []
    for d in dirs:
        files = sorted(p for p in (root / d).iterdir() if p.suffix in IMAGE_SUFFIXES)
        samples += [(str(p), classes.label_of[d]) for p in files[:max_per_class]]
    if not samples:
        raise FileNotFoundError(f"{root}: no images")
    return samples, classes


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
    label_space: str | None = None,
) -> ZeroShotSet:
    root = path if os.path.isdir(path) else os.path.dirname(path)
    names, names_from = classnames_and_source(classnames, classnames_key, root)
    prompts, prompts_from = templates_and_source(templates, templates_key, root)
    if fmt == "folder":
        samples, c = image_folder(path, names, max_per_class, label_space, names_from)
        return ZeroShotSet(
            name,
            c.names,
            prompts,
            samples,
            source=str(path),
            class_ids=c.ids,
            label_space=c.label_space,
            classnames_source=c.source,
            templates_source=prompts_from,
        )
    if fmt == "wds":
        if not isinstance(names, list):
            raise ValueError(f"{name}: a webdataset needs a list of class names (classnames or {CLASSNAME_FILES})")
        if label_space == PRESENT:
            raise ValueError(f"{name}: label_space 'present' needs an image folder; a webdataset uses its class list")
        shards = shard_list(path)
        if not shards or not all("://" in s or s.startswith("pipe:") or os.path.isfile(s) for s in shards):
            raise FileNotFoundError(f"{name}: no shards at {path}")
        return ZeroShotSet(
            name,
            names,
            prompts,
            shards=shards,
            source=str(path),
            class_ids=[str(i) for i in range(len(names))],
            classnames_source=names_from,
            templates_source=prompts_from,
        )
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


SPEC_INTS = ("max_per_class", "max_images")


def parse_spec(text: str) -> dict:
    """A set from the command line, `NAME=PATH[,key=value...]` or `NAME={json}`, as the config's dict (`name`,
    `path`, and the keys `zero_shot_set` / `retrieval_set` take: format, classnames, templates, *_key, ...)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"{text!r}: expected NAME=PATH[,key=value...] or NAME={{json}}")
    if rest.lstrip().startswith("{"):
        return {"name": name, **json.loads(rest)}
    path, *pairs = rest.split(",")
    spec: dict = {"name": name, "path": path}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{text!r}: {pair!r} is not key=value")
        spec[key] = int(value) if key in SPEC_INTS else value
    return spec


def from_spec(spec: dict) -> ZeroShotSet | RetrievalSet:
    """A config dict with `kind` 'zeroshot' or 'retrieval' (default zeroshot) as its set."""
    spec = dict(spec)
    kind, name, path = spec.pop("kind", "zeroshot"), spec.pop("name"), spec.pop("path")
    make, fmt = (zero_shot_set, ZEROSHOT_FORMAT) if kind == "zeroshot" else (retrieval_set, RETRIEVAL_FORMAT)
    known = set(inspect.signature(make).parameters) - {"name", "path", "fmt"}
    if set(spec) - known - {"format"}:  # a typo must not become a TypeError deep inside
        raise ValueError(
            f"{name}: unknown keys {sorted(set(spec) - known - {'format'})}; {kind} sets take {sorted(known)}"
        )
    return make(name, path, spec.pop("format", fmt), **spec)


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
