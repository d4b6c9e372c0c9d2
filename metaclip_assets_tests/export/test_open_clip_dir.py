"""`metaclip-assets export --to open_clip`: checkpoints of every layout become open_clip hub folders that open_clip
itself loads (`local-dir:`), with the same weights and the same embeddings; folders are replaced whole, never merged,
and a user's own folder is never overwritten."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from metaclip_assets.cli import main
from metaclip_assets.export import open_clip_dir, run
from metaclip_assets.training import models

TEXTS = ["a photo of a dog", "a red circle", "two cats on a sofa"]


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model, _, _ = models.build(models.TINY_MODEL, torch.device("cpu"))
    return model.eval()


def natural_image(size: int = 96) -> Image.Image:
    """Smooth gradients plus noise: not a flat colour, so preprocessing differences would show."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(6 * x) * 0.5 + 0.5, y, (x * y) ** 0.5], axis=-1) * 200 + rng.normal(0, 20, (size, size, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def embeddings(model, preprocess, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.encode_image(preprocess(natural_image()).unsqueeze(0)), model.encode_text(tokenizer(TEXTS))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["open_clip", "legacy", "open_clip_train"])
def test_every_checkpoint_layout_exports_to_a_folder_open_clip_loads(tiny, tmp_path, layout, capsys):
    weights = tiny.state_dict()
    state = {
        "open_clip": {"state_dict": weights, "model_name": "tiny-clip", "step": 7, "config": {"snapshot": "S1"}},
        "legacy": {"model": weights, "model_name": "tiny-clip", "step": 7},
        # open_clip_train's own file: DDP prefixes, and `name` is the run's name, not the architecture
        "open_clip_train": {
            "epoch": 1,
            "name": "2024_run",
            "state_dict": {f"module.{k}": v for k, v in weights.items()},
        },
    }[layout]
    ckpt = tmp_path / "final.pt"
    torch.save(state, ckpt)
    arch = ["--arch", "tiny-clip"] if layout == "open_clip_train" else []
    main(["export", str(ckpt), "--to", "open_clip", "--out", str(tmp_path / "out"), *arch])
    printed = capsys.readouterr().out
    assert f"create_model_and_transforms('local-dir:{tmp_path / 'out'}')" in printed

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'out'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'out'}")
    assert_same_weights(model, tiny)
    _, preprocess_ref = open_clip.create_model_and_transforms("tiny-clip", pretrained=None)[1:]
    ours, ref = (
        embeddings(model.eval(), preprocess, tokenizer),
        embeddings(tiny, preprocess_ref, models.build("tiny-clip", torch.device("cpu"))[2]),
    )
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])
    config = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())
    assert (
        config["model_cfg"]["vision_cfg"]["image_size"] == 32 and config["preprocess_cfg"]["resize_mode"] == "shortest"
    )
    provenance = json.loads((tmp_path / "out" / "metaclip_export.json").read_text())
    assert provenance["arch"] == "tiny-clip" and len(provenance["checkpoint_sha256"]) == 64


def test_without_the_architecture_the_error_says_what_to_pass(tiny, tmp_path):
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run", "state_dict": tiny.state_dict()}, ckpt)
    with pytest.raises(SystemExit, match="--arch ViT-B-32-quickgelu"):
        main(["export", str(ckpt), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="does not fit ViT-B-32-quickgelu"):
        main(["export", str(ckpt), "--out", str(tmp_path / "out"), "--arch", "ViT-B-32-quickgelu"])
    assert not (tmp_path / "out").exists()


def test_a_users_folder_is_never_overwritten_and_an_earlier_export_is_replaced_whole(tiny, tmp_path):
    ckpt = tmp_path / "final.pt"
    torch.save({"state_dict": tiny.state_dict(), "model_name": "tiny-clip"}, ckpt)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        run.export(ckpt, {"open_clip": mine})
    assert (mine / "notes.txt").read_text() == "keep me"

    out = tmp_path / "out"
    run.export(ckpt, {"open_clip": out})
    (out / "stray.bin").write_bytes(b"x")  # left by hand in an earlier export
    (tmp_path / f".out.tmp-{12345}").mkdir()  # a killed export's leftover
    run.export(ckpt, {"open_clip": out})
    assert not (out / "stray.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt", "mine", "out"]


def test_the_trainers_checkpoint_of_a_metaclip_architecture_loads_by_name(tmp_path):
    """The seeds' snippet for MetaCLIP's own architectures: `create_model_and_transforms(arch, pretrained=file)`."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
    ckpt = tmp_path / "final.pt"
    torch.save({"state_dict": model.state_dict(), "model_name": "ViT-B-32-quickgelu", "step": 1}, ckpt)
    loaded, _, _ = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained=str(ckpt))
    assert_same_weights(loaded, model)
    result = run.export(ckpt, {"open_clip": tmp_path / "out"})["open_clip"]
    assert result["bytes"] > 500 * 2**20 and "open_clip_model.safetensors" in result["files"]


def test_the_export_folder_loads_in_a_fresh_process_without_our_package(tiny, tmp_path):
    """What a user elsewhere has: open_clip alone, no registration of tiny-clip, no metaclip_assets import."""
    ckpt = tmp_path / "final.pt"
    torch.save({"state_dict": tiny.state_dict(), "model_name": "tiny-clip"}, ckpt)
    out = tmp_path / "out"
    run.export(ckpt, {"open_clip": out})
    code = (
        "import sys, open_clip\n"
        f"m, _, p = open_clip.create_model_and_transforms('local-dir:{out}')\n"
        f"t = open_clip.get_tokenizer('local-dir:{out}')\n"
        "assert 'metaclip_assets' not in sys.modules\n"
        "print(m.visual.image_size, t.context_length)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["(32,", "32)", "32"]


def test_unknown_format_fails_before_loading(tmp_path):
    with pytest.raises(ValueError, match="open_clip, hf"):
        run.export(tmp_path / "missing.pt", {"onnx": tmp_path / "out"})


def test_provenance_names_the_checkpoint_facts(tiny, tmp_path):
    ckpt = tmp_path / "final.pt"
    torch.save(
        {
            "state_dict": tiny.state_dict(),
            "model_name": "tiny-clip",
            "step": 12,
            "config": {"snapshot": "CC-MAIN-2024-10"},
        },
        ckpt,
    )
    run.export(ckpt, {"open_clip": tmp_path / "out"})
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: open_clip" in card and "snapshot: CC-MAIN-2024-10" in card and "step: 12" in card
    assert open_clip_dir.PROVENANCE_NAME in run.export(ckpt, {"open_clip": tmp_path / "out"})["open_clip"]["files"]


def test_both_formats_in_one_command_go_to_subfolders(tiny, tmp_path, capsys):
    ckpt = tmp_path / "final.pt"
    torch.save({"state_dict": tiny.state_dict(), "model_name": "tiny-clip"}, ckpt)
    main(["export", str(ckpt), "--to", "open_clip", "--to", "hf", "--out", str(tmp_path / "out")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hf", "open_clip"]
    assert "CLIPProcessor.from_pretrained" in capsys.readouterr().out
    hf_config = json.loads((tmp_path / "out" / "hf" / "processor_config.json").read_text())
    assert hf_config["image_processor"]["crop_size"] == {"height": 32, "width": 32}  # the model's size, not 224
