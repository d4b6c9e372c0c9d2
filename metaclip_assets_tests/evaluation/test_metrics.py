"""Evaluation without a model: metric math on hand-built embeddings with known answers, the TiC-CLIP summary,
report rendering, and the eval-set loaders (class-name mapping, template formats, retrieval files)."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaclip_assets.evaluation import datasets, metrics, runner, timeperiod

torch.set_num_threads(1)


# ---- zero-shot classification ---------------------------------------------------------------------------------
def test_class_weights_normalise_each_template_before_averaging():
    # class 0: templates (3, 0) and (0, 4). Per-template normalisation gives (1,0),(0,1) -> (1,1)/sqrt2; averaging
    # the raw vectors first would give (3,4)/5 instead.
    emb = torch.tensor([[[3.0, 0.0], [0.0, 4.0]], [[0.0, -2.0], [0.0, -5.0]]])
    w = metrics.class_weights(emb)
    assert torch.allclose(w[0], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    assert torch.allclose(w[1], torch.tensor([0.0, -1.0]))
    assert torch.allclose(w.norm(dim=1), torch.ones(2))


def test_identity_scores_are_perfect():
    m = metrics.zero_shot_metrics(torch.eye(7) * 3.0, torch.arange(7))
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class_recall"] == 1.0
    assert m["n_samples"] == 7 and m["n_classes"] == 7 and m["chance_top1"] == pytest.approx(1 / 7)


def test_known_ranks_give_exact_topk():
    # 8 classes, 10 samples; the true class is placed at rank r (0-based) of its row.
    ranks = [0, 0, 0, 1, 2, 4, 5, 7, 0, 3]
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 1])
    logits = torch.zeros(10, 8)
    for i, (r, y) in enumerate(zip(ranks, labels.tolist())):
        others = [c for c in range(8) if c != y]
        order = others[:r] + [y] + others[r:]  # descending score order
        for pos, c in enumerate(order):
            logits[i, c] = 10.0 - pos
    m = metrics.zero_shot_metrics(logits, labels)
    assert m["top1"] == pytest.approx(4 / 10)  # ranks 0
    assert m["top5"] == pytest.approx(8 / 10)  # ranks < 5
    # per class top-1 recall: class 0: 2/2, 1: 1/2, 2: 1/1, 3..7: 0 -> (1 + .5 + 1) / 8
    assert m["mean_per_class_recall"] == pytest.approx(2.5 / 8)


def test_mean_per_class_recall_ignores_class_sizes_and_absent_classes():
    labels = torch.tensor([0] * 8 + [1] * 2)  # class 2 has no samples
    logits = torch.zeros(10, 3)
    logits[:, 0] = 1.0  # always predicts class 0
    m = metrics.zero_shot_metrics(logits, labels)
    assert m["top1"] == pytest.approx(0.8) and m["mean_per_class_recall"] == pytest.approx(0.5)


def test_topk_is_capped_at_the_number_of_classes():
    m = metrics.zero_shot_metrics(torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]), torch.tensor([0, 0]))
    assert m["top1"] == 0.5 and m["top5"] == 1.0  # top-5 of 3 classes = top-3


def test_ties_count_against_the_model():
    # All scores equal (a collapsed model): nothing is right at k < #classes.
    m = metrics.zero_shot_metrics(torch.ones(6, 6), torch.arange(6))
    assert m["top1"] == 0.0 and m["top5"] == 0.0 and m["mean_per_class_recall"] == 0.0
    # True class tied with exactly one other at the top: wrong at 1, right at 2.
    logits = torch.tensor([[5.0, 5.0, 1.0, 0.0]])
    assert metrics.beaten_by(logits, F.one_hot(torch.tensor([0]), 4).bool()).tolist() == [1]
    assert metrics.zero_shot_metrics(logits, torch.tensor([0]), ks=(1, 2)) == pytest.approx(
        {
            "top1": 0.0,
            "top2": 1.0,
            "mean_per_class_recall": 0.0,
            "n_samples": 1.0,
            "n_classes": 4.0,
            "chance_top1": 0.25,
        }
    )


def test_nan_scores_are_wrong_not_right():
    logits = torch.tensor([[float("nan"), 1.0, 0.0], [float("nan")] * 3])
    m = metrics.zero_shot_metrics(logits, torch.tensor([0, 0]), ks=(1, 2))
    assert m["top1"] == 0.0 and m["top2"] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least one positive"):
        metrics.beaten_by(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="classes, templates, dim"):
        metrics.class_weights(torch.zeros(3, 4))


# ---- retrieval -----------------------------------------------------------------------------------------------
def test_retrieval_identity_is_perfect():
    images = torch.eye(12)
    texts = torch.cat([images, images + 0.1 * torch.eye(12).roll(1, 0)])  # two captions per image
    m = metrics.retrieval_metrics(images, texts, torch.arange(12).repeat(2))
    assert all(m[f"{d}_r{k}"] == 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert m["n_images"] == 12 and m["n_texts"] == 24


def test_retrieval_permuted_has_exact_recall():
    # Images are one-hot. Caption of image i = e_pi(i) + 0.5 e_i: its own image ranks second unless pi(i) = i.
    n = 10
    pi = [1, 2, 3, 0] + list(range(4, n))  # a 4-cycle, 6 fixed points
    images = torch.eye(n)
    texts = torch.stack([images[pi[i]] + 0.5 * images[i] for i in range(n)])
    m = metrics.retrieval_metrics(images, texts, torch.arange(n))
    assert m["t2i_r1"] == pytest.approx(0.6) and m["t2i_r5"] == 1.0
    # image i: the caption of pi^-1(i) scores 0.89, its own 0.45 -> second, again unless fixed.
    assert m["i2t_r1"] == pytest.approx(0.6) and m["i2t_r5"] == 1.0


def test_retrieval_ties_and_several_captions():
    # 4 one-hot images; caption A_i = e_i, caption B_i = e_(i+1). Image i ties its own A_i with B_(i-1).
    images = torch.eye(4)
    texts = torch.cat([images, images.roll(1, 1)])
    owner = torch.arange(4).repeat(2)
    m = metrics.retrieval_metrics(images, texts, owner)
    assert m["i2t_r1"] == 0.0 and m["i2t_r5"] == 1.0  # the tie counts against; 2nd place is within 5
    # A captions find their image; B captions score their image 0, tied with two others, behind one: rank 4.
    assert m["t2i_r1"] == 0.5 and m["t2i_r5"] == 1.0
    positive = owner[None, :] == torch.arange(4)[:, None]
    assert metrics.beaten_by(images @ texts.T, positive).tolist() == [1, 1, 1, 1]
    assert metrics.beaten_by(texts @ images.T, positive.T).tolist() == [0, 0, 0, 0, 3, 3, 3, 3]


def test_collapsed_embeddings_score_zero_retrieval():
    m = metrics.retrieval_metrics(torch.ones(20, 8), torch.ones(40, 8), torch.arange(20).repeat(2))
    assert m["i2t_r10"] == 0.0 and m["t2i_r10"] == 0.0


# ---- TiC-CLIP matrix, summary, rendering --------------------------------------------------------------------
MATRIX = {
    "rows": ["A", "B", "C"],
    "cols": ["A", "B", "C"],
    "values": [[0.50, 0.30, 0.20], [0.40, 0.60, 0.35], [0.45, 0.50, 0.70]],
}


def test_compute_matrix_and_summary():
    scores = {
        ("a.pt", "A"): 0.5,
        ("a.pt", "B"): 0.3,
        ("a.pt", "C"): 0.2,
        ("b.pt", "A"): 0.4,
        ("b.pt", "B"): 0.6,
        ("b.pt", "C"): 0.35,
        ("c.pt", "A"): 0.45,
        ("c.pt", "B"): 0.5,
        ("c.pt", "C"): 0.7,
    }
    calls = []

    def score(ckpt, ds):
        calls.append((ckpt, ds))
        return scores[(ckpt, ds)]

    m = timeperiod.compute_matrix({"C": "c.pt", "A": "a.pt", "B": "b.pt"}, {"B": "B", "A": "A", "C": "C"}, score)
    assert m == MATRIX
    assert [c[0] for c in calls] == ["a.pt"] * 3 + ["b.pt"] * 3 + ["c.pt"] * 3  # model by model
    s = timeperiod.summary(MATRIX, "C")
    assert s["in_distribution"] == 0.70
    assert s["backward_transfer"] == pytest.approx((0.45 + 0.50) / 2)
    assert s["forward_transfer"] == pytest.approx((0.30 + 0.20 + 0.35) / 3)
    # forgetting on A: max(0.50, 0.40) - 0.45; on B: 0.60 - 0.50
    assert s["forgetting"] == pytest.approx(((0.50 - 0.45) + (0.60 - 0.50)) / 2)
    first = timeperiod.summary({"rows": ["A"], "cols": ["A"], "values": [[0.5]]}, "A")
    assert first == {"in_distribution": 0.5, "backward_transfer": None, "forward_transfer": None, "forgetting": None}


def test_matrix_markdown_and_heatmap():
    md = timeperiod.markdown(MATRIX, "B")
    lines = md.splitlines()
    assert lines[0] == "| model \\ eval (top1) | A | B | C |" and len(lines) == 5
    assert lines[3] == "| **B** | 40.0% | 60.0% | 35.0% |"
    png = timeperiod.heatmap_png(MATRIX)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 60_000  # small enough to inline
    with Image.open(io.BytesIO(png)) as img:
        assert img.width > 100 and img.height > 100
    assert timeperiod.data_uri(png).startswith("data:image/png;base64,iVBOR")


def test_finite_check_flags_out_of_range_and_nan():
    base = {
        "zeroshot": {
            "s": {
                "top1": 0.5,
                "top5": 0.9,
                "mean_per_class_recall": 0.5,
                "n_samples": 10.0,
                "nonfinite_embeddings": 0.0,
            }
        },
        "retrieval": {},
        "matrix": None,
        "tic": None,
    }
    assert runner.finite_check(base) == {"passed": True, "checked": 5, "problems": []}
    bad = json.loads(json.dumps(base))
    bad["zeroshot"]["s"]["top5"] = 1.5
    bad["zeroshot"]["s"]["nonfinite_embeddings"] = 3.0
    bad["matrix"] = {"rows": ["A"], "cols": ["A"], "values": [[float("nan")]]}
    result = runner.finite_check(bad)
    assert not result["passed"] and len(result["problems"]) == 3
    assert runner.finite_check({"zeroshot": {}, "retrieval": {}, "matrix": None, "tic": None})["passed"] is False


# ---- eval-set loaders -----------------------------------------------------------------------------------------
def _jpg(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def test_image_folder_maps_folders_by_name_never_by_position(tmp_path):
    for d in ("dog", "cat", "sea_lion"):
        _jpg(tmp_path / "named" / d / "a.jpg")
        _jpg(tmp_path / "named" / d / "b.png")
    samples, c = datasets.image_folder(tmp_path / "named", ["zebra", "dog", "sea lion", "cat"], max_per_class=1)
    assert [(p.split("/")[-2], y) for p, y in samples] == [("cat", 3), ("dog", 1), ("sea_lion", 2)]
    assert c.names == ["zebra", "dog", "sea lion", "cat"] and c.label_space == "full"  # the list given
    samples, c = datasets.image_folder(tmp_path / "named", ["zebra", "dog", "sea lion", "cat"], label_space="present")
    assert c.names == ["dog", "sea lion", "cat"] and sorted({y for _, y in samples}) == [0, 1, 2]
    assert [c.names[y] for p, y in samples] == [p.split("/")[-2].replace("_", " ") for p, _ in samples]
    # As many names as folders, but other names: the old sorted-position fallback would have labelled these.
    with pytest.raises(ValueError, match="not among the 3 class names.*JSON object"):
        datasets.image_folder(tmp_path / "named", ["a", "b", "c"])
    samples, c = datasets.image_folder(tmp_path / "named", {"dog": "puppy", "cat": "kitten", "sea_lion": "seal"})
    assert c.names == ["puppy", "kitten", "seal"] and [c.names[y] for _, y in samples[::2]] == [
        "kitten",
        "puppy",
        "seal",
    ]
    samples, c = datasets.image_folder(tmp_path / "named", None)  # no source: the folder names are the names
    assert c.names == ["cat", "dog", "sea lion"] and c.source == "folder names"
    for d in ("0", "1"):
        _jpg(tmp_path / "digits" / d / "a.jpg")
    with pytest.raises(ValueError, match="are not class names.*--classnames"):
        datasets.image_folder(tmp_path / "digits", None)


def test_names_and_templates_from_files(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"cifar10": ["cat"], "other": ["x"]}))
    (tmp_path / "t.txt").write_text("a photo of a {c}.\n\nart of the {c}\n")
    assert datasets.load_classnames(str(tmp_path / "c.json"), "cifar10") == ["cat"]
    with pytest.raises(ValueError, match="set a key"):
        datasets.load_classnames(str(tmp_path / "c.json"))
    t = datasets.load_templates(str(tmp_path / "t.txt"))
    assert [datasets.fill(x, "dog") for x in t] == ["a photo of a dog.", "art of the dog"]
    assert datasets.fill("a {}.", "dog") == "a dog."
    names, templates = datasets.openai_imagenet()
    assert len(names) == 1000 and names[0] == "tench" and len(templates) == 80
    assert templates[0] == "a bad photo of a {}." and datasets.load_templates(None) == templates


def test_retrieval_loaders_jsonl_and_coco(tmp_path):
    for name in ("1.jpg", "2.jpg"):
        _jpg(tmp_path / "val2017" / name)
    coco = {
        "images": [{"id": 2, "file_name": "2.jpg"}, {"id": 1, "file_name": "1.jpg"}, {"id": 3, "file_name": "3.jpg"}],
        "annotations": [
            {"image_id": 1, "id": 1, "caption": "a cat "},
            {"image_id": 2, "id": 2, "caption": "a dog"},
            {"image_id": 1, "id": 3, "caption": "cat on mat"},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions.json").write_text(json.dumps(coco))
    c = datasets.retrieval_set("coco", str(tmp_path / "annotations" / "captions.json"), "coco")
    assert [p.split("/")[-1] for p in c.images] == ["1.jpg", "2.jpg"]  # image 3 has no caption: left out
    assert c.captions == [["a cat", "cat on mat"], ["a dog"]] and c.flat()[1] == [0, 0, 1]
    (tmp_path / "pairs.jsonl").write_text(
        '{"image": "val2017/1.jpg", "captions": ["x", "y"]}\n{"image": "val2017/2.jpg", "captions": "z"}\n'
    )
    j = datasets.retrieval_set("j", str(tmp_path / "pairs.jsonl"))
    assert j.captions == [["x", "y"], ["z"]] and j.images == c.images
    (tmp_path / "bad.jsonl").write_text('{"image": "val2017/9.jpg", "captions": ["x"]}\n')
    with pytest.raises(FileNotFoundError, match="1 images missing"):
        datasets.retrieval_set("bad", str(tmp_path / "bad.jsonl"))
