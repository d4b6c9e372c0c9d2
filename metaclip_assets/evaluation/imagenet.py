"""ImageNet-1k class names by WordNet id, so an ImageNet-style folder (`val/n01440764/*.JPEG`) is labelled by what
its folders are called, whichever subset of the 1000 is present.

Two lists, both in the standard class-index order (class i = line i), both shipped with packages we already
install, so nothing is downloaded:
- the 1000 wnids: timm's `timm/data/_info/imagenet_synsets.txt`, read through `timm.data.ImageNetInfo`
  (timm is a dependency of open_clip_torch);
- the 1000 class names: OpenAI's cleaned-up names as open_clip ships them,
  `open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES` (also clip_benchmark's `imagenet1k` names).
"""

from __future__ import annotations

import functools
import re

N_CLASSES = 1000
WNID_SOURCE = "timm timm/data/_info/imagenet_synsets.txt"
NAMES_SOURCE = "open_clip.zero_shot_metadata.IMAGENET_CLASSNAMES (OpenAI's names)"
_WNID = re.compile(r"n\d{8}")  # "n" + the 8-digit WordNet noun offset


def looks_like_wnid(name: str) -> bool:
    return _WNID.fullmatch(name) is not None


@functools.cache
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order."""
    from timm.data import ImageNetInfo

    ids = tuple(ImageNetInfo("imagenet-1k").label_names())
    if len(ids) != N_CLASSES or len(set(ids)) != N_CLASSES:  # a changed timm file must not mislabel silently
        raise RuntimeError(f"timm's ImageNet-1k synset list has {len(ids)} entries, {len(set(ids))} distinct")
    return ids


@functools.cache
def classnames() -> tuple[str, ...]:
    """OpenAI's 1000 ImageNet class names in class-index order (two are repeated: 'missile', 'sunglasses')."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if len(IMAGENET_CLASSNAMES) != N_CLASSES:
        raise RuntimeError(f"open_clip's IMAGENET_CLASSNAMES has {len(IMAGENET_CLASSNAMES)} names, not 1000")
    return tuple(IMAGENET_CLASSNAMES)


@functools.cache
def index_of() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}


def all_imagenet(folders: list[str]) -> bool:
    """Every folder is an ImageNet-1k wnid."""
    known = index_of()
    return bool(folders) and all(f in known for f in folders)


def name_of(wnid: str) -> str:
    return classnames()[index_of()[wnid]]
