"""Evaluation on real data from ../shared/realdata: CIFAR-10 test images (zero-shot, clip_benchmark's CIFAR-10
templates) and COCO val2017 captions (retrieval). The model is a randomly initialised tiny CLIP, so these check
that real files flow through the pipeline and the numbers are sane and near chance, not accuracy."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from metaclip_assets.evaluation import datasets, model_eval
from metaclip_assets.evaluation.runner import EvalConfig, Evaluator
from metaclip_assets.training import checkpoint, models

torch.set_num_threads(1)
PER_CLASS = 20
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def cifar(realdata, tmp_path_factory) -> Path:
    """The first 20 test images of every class, extracted from the tarball into `<tmp>/test/<class>/`."""
    out = tmp_path_factory.mktemp("cifar")
    taken: dict[str, int] = {}
    with tarfile.open(realdata / "cifar10-test-jpg" / "cifar10-test-jpg.tar.gz") as tar:
        members = []
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 3 and parts[2].endswith(".jpg") and taken.get(parts[1], 0) < PER_CLASS:
                taken[parts[1]] = taken.get(parts[1], 0) + 1
                members.append(m)
        tar.extractall(out, members=members, filter="data")
    return out / "test"


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model, _, _ = models.build("tiny-clip", torch.device("cpu"))
    return str(
        checkpoint.save_atomic(
            {"model": model.state_dict(), "model_name": "tiny-clip", "step": 0},
            tmp_path_factory.mktemp("ckpt") / "final.pt",
        )
    )


@pytest.mark.realdata
def test_cifar10_zero_shot_and_coco_retrieval(realdata, cifar, random_ckpt):
    zs = realdata / "zeroshot-classnames-templates"
    coco = realdata / "coco-mini-val2017"
    cfg = EvalConfig(
        checkpoint=random_ckpt,
        snapshot="realdata",
        time_matrix=False,
        tracking_uri="none",
        zeroshot=[
            {
                "name": "cifar10",
                "path": str(cifar),
                "templates": str(zs / "en_zeroshot_classification_templates.json"),
                "templates_key": "cifar10",
            }
        ],
        retrieval=[{"name": "coco", "path": str(coco / "annotations" / "captions_val2017.json"), "format": "coco"}],
    )
    result = Evaluator(cfg, log=lambda _: None).run()
    c, r = result["zeroshot"]["cifar10"], result["retrieval"]["coco"]
    print(
        f"random tiny-clip: CIFAR-10 ({int(c['n_samples'])} images) top1 {c['top1']:.3f} top5 {c['top5']:.3f} "
        f"mpcr {c['mean_per_class_recall']:.3f}; COCO ({int(r['n_images'])} images, {int(r['n_texts'])} captions) "
        + " ".join(f"{k} {r[k]:.3f}" for k in r if k[:3] in ("i2t", "t2i"))
    )
    assert c["n_samples"] == 10 * PER_CLASS and c["n_classes"] == 10 and c["nonfinite_embeddings"] == 0
    assert c["top1"] < 0.3 and c["mean_per_class_recall"] < 0.3 and 0.2 <= c["top5"] <= 0.8  # chance .1/.1/.5
    captions = json.loads((coco / "annotations" / "captions_val2017.json").read_text())
    assert r["n_images"] == len({a["image_id"] for a in captions["annotations"]}) == 79
    assert r["n_texts"] == len(captions["annotations"]) == 395
    for d in ("i2t", "t2i"):
        assert r[f"{d}_r1"] <= r[f"{d}_r5"] <= r[f"{d}_r10"] <= 1.0
    assert r["t2i_r1"] < 0.1 and r["t2i_r10"] < 0.4  # chance: 1/79 and 10/79
    assert result["finite"]["passed"]


@pytest.mark.realdata
def test_cifar_classnames_templates_and_prompt_ensemble(realdata, cifar, random_ckpt):
    import open_clip

    zs = realdata / "zeroshot-classnames-templates"
    ds = datasets.zero_shot_set(
        "cifar10", str(cifar), templates=str(zs / "en_zeroshot_classification_templates.json"), templates_key="cifar10"
    )
    assert ds.classnames == CIFAR10 and len(ds.templates) == 18 and ds.templates[0] == "a photo of a {c}."
    assert {y for _, y in ds.samples} == set(range(10)) and len(ds.samples) == 200
    # The same 80 OpenAI templates open_clip ships, in clip_benchmark's {c} spelling.
    assert [
        datasets.fill(t, "x")
        for t in datasets.load_templates(str(zs / "en_zeroshot_classification_templates.json"), "imagenet1k")
    ] == [datasets.fill(t, "x") for t in datasets.openai_imagenet()[1]]
    lm = model_eval.load_model(random_ckpt, torch.device("cpu"))
    ours = model_eval.classifier(lm, ds.classnames, ds.templates)
    ref = open_clip.build_zero_shot_classifier(
        lm.model, lm.tokenizer, ds.classnames, [lambda c, t=t: datasets.fill(t, c) for t in ds.templates]
    )
    assert torch.allclose(ours, ref.T, atol=1e-5)
