"""`metaclip-assets evaluate` end to end on a tiny CLIP in every layout a user brings: our checkpoint (current
`state_dict` and legacy `model` layout), open_clip_train's (`module.` keys, run name instead of the architecture,
so `--arch`), and open_clip's hub folder (`local-dir:`, tiny-clip not registered there)."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from metaclip_assets.cli import main as cli
from metaclip_assets.evaluation import model_eval
from metaclip_assets.evaluation.runner import EvalConfig, Evaluator
from metaclip_assets.training import models
from metaclip_assets_tests.evaluation.test_imagenet import SUBSET, imagenet_folder

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict:
    """The same random tiny-clip weights saved in each layout; `val` is a 3-class ImageNet subset."""
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    model, _, _ = models.build(models.TINY_MODEL, torch.device("cpu"))
    sd = model.state_dict()
    paths = {"ours": root / "final.pt", "legacy": root / "legacy.pt", "oc_train": root / "epoch_1.pt"}
    torch.save({"state_dict": sd, "model_name": models.TINY_MODEL}, paths["ours"])
    torch.save({"model": sd, "model_name": models.TINY_MODEL, "step": 3}, paths["legacy"])
    torch.save(
        {"epoch": 1, "name": "my-run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, paths["oc_train"]
    )
    hub = root / "hub"
    hub.mkdir()
    cfg = json.loads((models.MODEL_CONFIG_DIR / f"{models.TINY_MODEL}.json").read_text())
    (hub / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg)})
    )
    save_file({k: v.contiguous() for k, v in sd.items()}, hub / "open_clip_model.safetensors")
    return {
        **{k: str(v) for k, v in paths.items()},
        "local_dir": f"local-dir:{hub}",
        "model": model.eval(),
        "val": imagenet_folder(root / "val"),
    }


def evaluate(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        cli(["evaluate", "--device", "cpu", *argv])
    return exit_.value.code


@pytest.mark.parametrize("layout", ["ours", "legacy", "oc_train", "local_dir"])
def test_every_layout_loads_the_same_weights(layouts, layout):
    lm = model_eval.load_model(layouts[layout], torch.device("cpu"), "tiny-clip" if layout == "oc_train" else None)
    images = torch.randn(2, 3, 32, 32)
    tokens = open_clip.get_tokenizer("tiny-clip")(["a photo of a tench", "a chainsaw"])
    with torch.no_grad():
        assert torch.equal(lm.model.encode_image(images), layouts["model"].encode_image(images))
        assert torch.equal(
            lm.model.encode_text(lm.tokenizer(["a photo of a tench", "a chainsaw"])),
            layouts["model"].encode_text(tokens),
        )
    assert not lm.preprocess.transforms[0].__class__.__name__.startswith("RandomResized")  # the eval transform


def test_evaluate_an_imagenet_subset_from_the_command_line(layouts, tmp_path, capsys):
    runs = {
        "ours": [layouts["ours"]],
        "legacy": [layouts["legacy"]],
        "oc_train": [layouts["oc_train"], "--arch", "tiny-clip"],
        "local_dir": [layouts["local_dir"]],
    }
    results = {}
    for name, (model, *extra) in runs.items():
        assert (
            evaluate(["--model", model, *extra, "--imagenet", str(layouts["val"]), "--out", str(tmp_path / name)]) == 0
        )
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    out = capsys.readouterr().out
    assert "imagenet: top-1" in out and "(6 images, 3 classes [present], 80 templates)" in out
    r = results["ours"]["zeroshot"]["imagenet"]
    assert set(r["per_class_recall"]) == set(SUBSET.values()) and r["n_samples"] == 6 and r["n_classes"] == 3
    assert r["label_space"] == "present" and r["templates"]["count"] == 80
    assert "OPENAI_IMAGENET_TEMPLATES" in r["templates"]["source"] and "imagenet_synsets.txt" in r["classnames_source"]
    assert 0 <= r["top1"] <= r["top5"] == 1.0  # 3 classes: top-5 is every class
    assert r["mean_per_class_recall"] == pytest.approx(sum(r["per_class_recall"].values()) / 3)
    assert results["ours"]["model"] == {"spec": layouts["ours"], "arch": "tiny-clip", "step": None, "device": "cpu"}
    assert results["local_dir"]["model"]["arch"] == layouts["local_dir"] and results["ours"]["finite"]["passed"]
    for name in runs:  # same weights, same numbers, whatever the layout
        assert results[name]["zeroshot"] == results["ours"]["zeroshot"], name
    # The asset's evaluator reads the same folder the same way.
    asset = Evaluator(
        EvalConfig(
            checkpoint=layouts["ours"],
            zeroshot=[{"name": "imagenet", "path": str(layouts["val"])}],
            time_matrix=False,
            tracking_uri="none",
        ),
        log=lambda _: None,
    ).run()
    assert asset["zeroshot"]["imagenet"]["top1"] == r["top1"] and asset["zeroshot"]["imagenet"]["n_classes"] == 3


def test_full_label_space_other_sets_and_retrieval(layouts, tmp_path):
    named = tmp_path / "named"
    for cls, wnid in (("tench", "n01440764"), ("chain_saw", "n03000684")):
        named.joinpath(cls).mkdir(parents=True)
        for p in sorted((layouts["val"] / wnid).iterdir()):
            named.joinpath(cls, p.name).write_bytes(p.read_bytes())
    (tmp_path / "templates.txt").write_text("a photo of a {c}.\nart of the {c}\n")
    images = sorted(layouts["val"].rglob("*.JPEG"))
    (tmp_path / "pairs.jsonl").write_text(
        "".join(
            json.dumps({"image": str(p), "captions": [f"picture {i}", f"image {i}"]}) + "\n"
            for i, p in enumerate(images)
        )
    )
    argv = ["--model", layouts["ours"], "--imagenet", str(layouts["val"]), "--imagenet-label-space", "full"]
    argv += ["--templates", str(tmp_path / "templates.txt")]  # 2 prompts for 1000 classes, not 80: fast
    argv += [
        "--zeroshot",
        f"named={named},templates={tmp_path / 'templates.txt'}",
        "--retrieval",
        f"pairs={tmp_path / 'pairs.jsonl'}",
    ]
    assert evaluate([*argv, "--max-per-class", "1", "--out", str(tmp_path / "out")]) == 0
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    inet, other, pairs = r["zeroshot"]["imagenet"], r["zeroshot"]["named"], r["retrieval"]["pairs"]
    assert inet["label_space"] == "full" and inet["n_classes"] == 1000 and inet["n_samples"] == 3
    assert inet["templates"]["count"] == 2 and inet["chance_top1"] == 0.001
    assert set(inet["per_class_recall"]) == set(SUBSET.values())  # only classes with images get a recall
    assert other["n_classes"] == 2 and set(other["per_class_recall"]) == {"tench", "chain saw"}
    assert other["templates"] == {"count": 2, "source": str(tmp_path / "templates.txt")}
    assert pairs["n_images"] == 6 and pairs["n_texts"] == 12 and 0 <= pairs["i2t_r1"] <= pairs["i2t_r10"] <= 1


def test_errors_say_what_to_pass(layouts, tmp_path):
    val = str(layouts["val"])
    assert "pass --arch NAME" in str(
        evaluate(["--model", layouts["oc_train"], "--imagenet", val, "--out", str(tmp_path)])
    )
    wrong = evaluate(
        ["--model", layouts["ours"], "--arch", "ViT-B-32-quickgelu", "--imagenet", val, "--out", str(tmp_path)]
    )
    assert "trained as 'tiny-clip'" in str(wrong)
    imagenet_folder(tmp_path / "odd", ("n01440764", "n99999999"))
    odd = evaluate(["--model", layouts["ours"], "--imagenet", str(tmp_path / "odd"), "--out", str(tmp_path)])
    assert "n99999999" in str(odd) and "--classnames" in str(odd)
    assert "nothing to evaluate" in str(evaluate(["--model", layouts["ours"], "--out", str(tmp_path)]))
    typo = evaluate(["--model", layouts["ours"], "--zeroshot", f"x={val},tempaltes=t.txt", "--out", str(tmp_path)])
    assert "unknown keys ['tempaltes']" in str(typo)
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text("{}")
    assert "no weights" in str(evaluate(["--model", f"local-dir:{empty}", "--imagenet", val, "--out", str(tmp_path)]))
    assert not (tmp_path / "results.json").exists()
