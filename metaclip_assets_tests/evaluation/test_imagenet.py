"""ImageNet-style folders are labelled by wnid through ImageNet-1k's standard list, whichever subset is present;
folders whose names cannot be resolved are an error that says what to pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from metaclip_assets.evaluation import datasets, imagenet

# A non-contiguous subset (class indices 0, 217, 491) and the names open_clip gives them.
SUBSET = {"n01440764": "tench", "n02102040": "English Springer Spaniel", "n03000684": "chainsaw"}
INDEX = {"n01440764": 0, "n02102040": 217, "n03000684": 491}


def imagenet_folder(root: Path, wnids=tuple(SUBSET), per_class: int = 2) -> Path:
    """ImageNet val's layout: <root>/<wnid>/ILSVRC2012_val_<n>.JPEG, a different colour per class."""
    n = 0
    for k, wnid in enumerate(wnids):
        (root / wnid).mkdir(parents=True)
        for _ in range(per_class):
            n += 1
            Image.new("RGB", (40, 30), (60 * k % 256, 200 - 50 * k, 90)).save(
                root / wnid / f"ILSVRC2012_val_{n:08d}.JPEG"
            )
    return root


def test_the_wnid_list_and_its_names():
    assert len(imagenet.wnids()) == len(imagenet.classnames()) == 1000
    for wnid, name in SUBSET.items():
        assert imagenet.index_of()[wnid] == INDEX[wnid] and imagenet.name_of(wnid) == name
    assert imagenet.looks_like_wnid("n01440764") and not imagenet.looks_like_wnid("n0144076")
    assert not imagenet.all_imagenet(["n01440764", "n99999999"]) and not imagenet.all_imagenet([])


def test_a_subset_is_labelled_by_wnid_among_the_classes_present(tmp_path):
    ds = datasets.zero_shot_set("imagenet", str(imagenet_folder(tmp_path / "val")))
    assert ds.classnames == list(SUBSET.values()) and ds.class_ids == list(SUBSET)
    assert ds.label_space == "present" and "imagenet_synsets.txt" in ds.classnames_source
    assert [(Path(p).parent.name, ds.classnames[y]) for p, y in ds.samples] == [
        (w, n) for w, n in SUBSET.items() for _ in range(2)
    ]
    assert len(ds.templates) == 80 and ds.templates_source.endswith("OPENAI_IMAGENET_TEMPLATES")
    full = datasets.zero_shot_set("imagenet", str(tmp_path / "val"), label_space="full")
    assert len(full.classnames) == 1000 and [y for _, y in full.samples[::2]] == list(INDEX.values())
    assert full.label_space == "full" and full.class_keys()[217] == "English Springer Spaniel"


def test_a_list_of_1000_names_is_read_in_class_index_order(tmp_path):
    imagenet_folder(tmp_path / "val")
    names = [f"class {i}" for i in range(1000)]
    (tmp_path / "names.json").write_text(json.dumps({"imagenet1k": names}))
    ds = datasets.zero_shot_set(
        "imagenet", str(tmp_path / "val"), classnames=str(tmp_path / "names.json"), classnames_key="imagenet1k"
    )
    assert ds.label_space == "full" and [ds.classnames[y] for _, y in ds.samples[::2]] == [
        "class 0",
        "class 217",
        "class 491",
    ]
    assert "by wnid" in ds.classnames_source
    present = datasets.zero_shot_set(
        "imagenet", str(tmp_path / "val"), classnames="openai_imagenet", label_space="present"
    )
    assert present.classnames == list(SUBSET.values())
    with pytest.raises(ValueError, match="not among the 999 class names"):  # not ImageNet-1k's list: no guessing
        (tmp_path / "short.json").write_text(json.dumps(names[:999]))
        datasets.zero_shot_set("imagenet", str(tmp_path / "val"), classnames=str(tmp_path / "short.json"))


def test_repeated_names_get_their_wnid_in_per_class_keys(tmp_path):
    ds = datasets.zero_shot_set(
        "imagenet", str(imagenet_folder(tmp_path / "val", ("n03773504", "n04008634", "n01440764")))
    )
    assert ds.classnames == ["tench", "missile", "missile"]
    assert ds.class_keys() == ["tench", "missile (n03773504)", "missile (n04008634)"]


def test_unresolvable_folders_are_an_error_that_says_what_to_pass(tmp_path):
    imagenet_folder(tmp_path / "val", ("n01440764", "n99999999"))  # the second is no ImageNet-1k class
    with pytest.raises(ValueError, match=r"n99999999\) look like WordNet ids but are not ImageNet-1k.*--classnames"):
        datasets.zero_shot_set("imagenet", str(tmp_path / "val"))
    imagenet_folder(tmp_path / "mixed", ("n01440764", "goldfish"))
    with pytest.raises(ValueError, match=r"\(n01440764\) are ImageNet-1k wnids beside other folders \(goldfish\)"):
        datasets.zero_shot_set("mixed", str(tmp_path / "mixed"))
    (tmp_path / "map.json").write_text(json.dumps({"n01440764": "tench", "n99999999": "my thing"}))
    ds = datasets.zero_shot_set("imagenet", str(tmp_path / "val"), classnames=str(tmp_path / "map.json"))
    assert ds.classnames == ["tench", "my thing"] and ds.class_ids == ["n01440764", "n99999999"]
    (tmp_path / "partial.json").write_text(json.dumps({"n01440764": "tench"}))
    with pytest.raises(ValueError, match=r"\(n99999999\) have no entry in the class-name object"):
        datasets.zero_shot_set("imagenet", str(tmp_path / "val"), classnames=str(tmp_path / "partial.json"))


@pytest.mark.realdata
def test_wnids_and_names_match_the_published_lists(realdata):
    zs = realdata / "zeroshot-classnames-templates"
    assert list(imagenet.wnids()) == (zs / "imagenet_synsets.txt").read_text().split()
    assert list(imagenet.classnames()) == json.loads((zs / "en_classnames.json").read_text())["imagenet1k"]
