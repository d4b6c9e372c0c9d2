"""transformers export: a random-init open_clip model, exported and reloaded offline with `from_pretrained`, gives the
same image and text embeddings as open_clip when each side runs its OWN preprocessing and tokenizer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from metaclip_assets.export.hf import hf_processor, hf_state_dict, hf_unsupported_reason, write_hf
from metaclip_assets.training.models import TINY_MODEL, register_model_configs

os.environ["HF_HUB_OFFLINE"] = "1"  # everything loads from the exported folder, never from the hub

TEXTS = ["a photo of a cat", "two dogs playing in the snow", "a red car parked next to a tree"]  # cleaning-neutral
TOL = 1e-4
COCO_IMAGE = "000000000139.jpg"  # 640x426: its crop offsets agree between open_clip and HF at 224 and 32 px


def natural_image(width: int = 320, height: int = 240) -> Image.Image:
    """A photo-like scene (sky gradient, hills, sun, a house, sensor noise, blur, JPEG round trip), not flat colour:
    resampling differences show up on edges and texture."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = np.stack([120 + 80 * y / height, 160 + 60 * y / height, 250 - 30 * y / height], axis=-1)
    horizon = height * (0.55 + 0.08 * np.sin(x / 37.0) + 0.04 * np.sin(x / 11.0))
    grass = np.stack([40 + 30 * np.sin(x / 5.0) * np.cos(y / 7.0), 120 + 40 * (y / height), 40 + 0 * x], axis=-1)
    pixels = np.where((y > horizon)[..., None], grass, sky) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((240, 20, 290, 70), fill=(255, 230, 120))
    draw.rectangle((60, 110, 140, 170), fill=(170, 40, 30), outline=(60, 20, 10), width=3)
    draw.polygon([(55, 112), (100, 75), (145, 112)], fill=(90, 60, 50))
    buf = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(0.8)).save(buf, format="JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop_offsets_agree(image: Image.Image, size: int) -> bool:
    """torchvision's centre crop rounds half to even, HF's floors: they agree unless (resized long side - size) is
    3 mod 4 (the gap the module docstring documents)."""
    long, short = max(image.size), min(image.size)
    return (int(size * long / short) - size) % 4 != 3


def _features(output) -> torch.Tensor:
    return getattr(output, "pooler_output", output)  # transformers 5 returns an output object, 4.x a tensor


def _max_diffs(model, preprocess, tokenizer, hf_dir: Path, image: Image.Image) -> dict[str, float]:
    from transformers import CLIPModel, CLIPProcessor

    hf = CLIPModel.from_pretrained(hf_dir).eval()
    processor = CLIPProcessor.from_pretrained(hf_dir, backend="pil")
    size = hf.config.vision_config.image_size
    assert _crop_offsets_agree(image, size), "pick an image outside the documented centre-crop gap"
    tokens = tokenizer(TEXTS)
    encoded = processor(text=TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    # Same ids up to the first eos; open_clip pads with 0, the export with eos (never read: causal mask).
    eos = tokens.argmax(dim=-1)
    for row, end in enumerate(eos.tolist()):
        assert encoded["input_ids"][row, : end + 1].tolist() == tokens[row, : end + 1].tolist()
    with torch.no_grad():
        ours_image = model.encode_image(preprocess(image).unsqueeze(0))
        ours_text = model.encode_text(tokens)
        hf_image = _features(hf.get_image_features(**processor(images=image, return_tensors="pt")))
        hf_text = _features(hf.get_text_features(**encoded))
    norm = torch.nn.functional.normalize
    return {
        "image": (ours_image - hf_image).abs().max().item(),
        "text": (ours_text - hf_text).abs().max().item(),
        "image_normalised": (norm(ours_image, dim=-1) - norm(hf_image, dim=-1)).abs().max().item(),
        "text_normalised": (norm(ours_text, dim=-1) - norm(hf_text, dim=-1)).abs().max().item(),
        "logit_scale": abs(model.logit_scale.item() - hf.logit_scale.item()),
    }


def _assert_close(name: str, diffs: dict[str, float]) -> None:
    print(f"{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))  # the numbers the README reports
    assert max(diffs.values()) < TOL, (name, diffs)


def _create(name: str):
    register_model_configs()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


@pytest.fixture(scope="module", params=[TINY_MODEL, "ViT-B-32-quickgelu", "ViT-B-16-quickgelu"])
def exported(request, tmp_path_factory):
    """(name, open_clip model, preprocess, tokenizer, export dir): one export per architecture, shared."""
    model, preprocess, tokenizer = _create(request.param)
    cfg = open_clip.get_model_config(request.param)
    out = write_hf(model, cfg, dict(model.visual.preprocess_cfg), tmp_path_factory.mktemp("hf") / request.param)
    return request.param, model, preprocess, tokenizer, out


def test_embeddings_match_open_clip(exported):
    name, model, preprocess, tokenizer, out = exported
    _assert_close(name, _max_diffs(model, preprocess, tokenizer, out, natural_image()))


@pytest.mark.realdata
def test_embeddings_match_open_clip_on_coco(exported, realdata):
    name, model, preprocess, tokenizer, out = exported
    image = Image.open(realdata / "coco-mini-val2017" / "val2017" / COCO_IMAGE).convert("RGB")
    _assert_close(f"{name} coco", _max_diffs(model, preprocess, tokenizer, out, image))


@pytest.mark.slow
def test_vit_l_embeddings_match_open_clip(tmp_path):
    """428M parameters: its own test, so the model is freed when it ends."""
    name = "ViT-L-14-quickgelu"
    model, preprocess, tokenizer = _create(name)
    out = write_hf(model, open_clip.get_model_config(name), dict(model.visual.preprocess_cfg), tmp_path / "hf")
    _assert_close(name, _max_diffs(model, preprocess, tokenizer, out, natural_image()))


@pytest.mark.parametrize("variant", ["gelu", "custom_text"])
def test_tiny_variants_map(variant, tmp_path):
    """Plain GELU (the non-quickgelu ViTs) and CustomTextCLIP's `text.`-prefixed tower map too."""
    register_model_configs()
    cfg = {**open_clip.get_model_config(TINY_MODEL), "quick_gelu": variant != "gelu"}
    torch.manual_seed(0)
    model = (open_clip.CustomTextCLIP if variant == "custom_text" else open_clip.CLIP)(**cfg).eval()
    if variant == "custom_text":
        cfg["custom_text"] = True
    out = write_hf(model, cfg, {"size": 32}, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["text_config"]["hidden_act"] == (
        "gelu" if variant == "gelu" else "quick_gelu"
    )
    preprocess = open_clip.image_transform(32, is_train=False)
    _assert_close(
        f"tiny {variant}", _max_diffs(model, preprocess, open_clip.get_tokenizer(TINY_MODEL), out, natural_image())
    )


def _tiny_export(tmp_path) -> Path:
    model, _, _ = _create(TINY_MODEL)
    return write_hf(model, open_clip.get_model_config(TINY_MODEL), dict(model.visual.preprocess_cfg), tmp_path / "hf")


def test_folder_layout_and_classic_tokenizer_files(tmp_path):
    """vocab.json + merges.txt alone (what transformers 4.x and other BPE readers use) tokenize as tokenizer.json."""
    from transformers import CLIPTokenizer

    out = _tiny_export(tmp_path)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json",
                 "tokenizer.json", "vocab.json", "merges.txt"):  # fmt: skip
        assert (out / name).is_file(), name
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    classic = tmp_path / "classic"
    classic.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (classic / name).write_bytes((out / name).read_bytes())
    texts = [*TEXTS, "Hello World!! it's 3 o'clock, naïve café 東京 🙂"]
    full, from_classic = CLIPTokenizer.from_pretrained(out), CLIPTokenizer.from_pretrained(classic)
    assert full(texts)["input_ids"] == from_classic(texts)["input_ids"]
    assert full.model_max_length == 32 and full.pad_token_id == 49407


def test_text_cleaning_gap_is_what_the_docstring_says(tmp_path):
    """open_clip runs ftfy + html.unescape before BPE, HF does not: entities and curly quotes tokenize differently;
    `open_clip.tokenizer.basic_clean` first closes the gap. Long texts truncate the same way (eos kept last)."""
    from transformers import CLIPTokenizer

    hf = CLIPTokenizer.from_pretrained(_tiny_export(tmp_path))
    ours = open_clip.get_tokenizer(TINY_MODEL)

    def ids(tokens: torch.Tensor) -> list[int]:
        row = tokens[0].tolist()
        return row[: row.index(49407) + 1]

    for text in ("fish &amp; chips", "it\u2019s a cafÃ©"):
        assert hf(text)["input_ids"] != ids(ours(text))
        assert hf(open_clip.tokenizer.basic_clean(text))["input_ids"] == ids(ours(text))
    long = " ".join(["word"] * 100)
    assert hf(long, truncation=True)["input_ids"] == ids(ours(long))


def test_centre_crop_gap_is_what_the_docstring_says():
    """Pixels are identical with the PIL backend except when (resized long side - crop) is 3 mod 4."""
    processor = hf_processor(open_clip.get_model_config("ViT-B-32-quickgelu"), {"size": 224})
    preprocess = open_clip.image_transform(224, is_train=False)
    for width, height in [(640, 426), (640, 480), (300, 300), (640, 427), (227, 224)]:
        image = natural_image(width, height)
        diff = (preprocess(image) - processor(images=image, return_tensors="pt")["pixel_values"][0]).abs().max()
        assert (diff == 0) == _crop_offsets_agree(image, 224), (width, height, diff)


def test_write_refuses_a_foreign_folder_and_replaces_an_earlier_export(tmp_path):
    model, _, _ = _create(TINY_MODEL)
    cfg, pcfg = open_clip.get_model_config(TINY_MODEL), dict(model.visual.preprocess_cfg)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier hf export"):
        write_hf(model, cfg, pcfg, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = write_hf(model, cfg, pcfg, tmp_path / "hf")
    (out / "stale.bin").write_bytes(b"x")
    assert write_hf(model, cfg, pcfg, out) == out and not (out / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "hf"]  # no temp folders left behind


@pytest.mark.parametrize(
    "name",
    ["ViT-B-32-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu", TINY_MODEL, "ViT-B-16", "ViT-bigG-14"],
)
def test_supported_configs(name):
    register_model_configs()
    assert hf_unsupported_reason(open_clip.get_model_config(name), {"size": 224}) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("convnext_base", "timm"),
        ("ViT-B-16-SigLIP", "logit bias"),
        ("coca_ViT-B-32", "CoCa"),
        ("RN50-quickgelu", "ModifiedResNet"),
        ("ViT-H-14-CLIPA", "ln_pre"),
        ("xlm-roberta-base-ViT-B-32", "HF model"),
        ("ViT-M-16-alt", "layer scale"),
        ("ViT-H-14-worldwide", "tokenizer"),
    ],
)
def test_unsupported_open_clip_configs(name, why):
    assert why in (hf_unsupported_reason(open_clip.get_model_config(name)) or "")


@pytest.mark.parametrize(
    ("tower", "change", "why"),
    [
        ("vision_cfg", {"attentional_pool": True}, "attentional pooling"),
        ("vision_cfg", {"pool_type": "avg"}, "pool_type"),
        ("vision_cfg", {"ls_init_value": 1e-5}, "layer scale"),
        ("vision_cfg", {"qk_norm": True}, "custom attention block"),
        ("vision_cfg", {"head_width": 48}, "head_width"),
        ("text_cfg", {"no_causal_mask": True}, "bidirectional"),
        ("text_cfg", {"proj_bias": True}, "bias"),
        ("text_cfg", {"pool_type": "last"}, "pool_type"),
        ("text_cfg", {"act_kwargs": {"approximate": "tanh"}}, "act_kwargs"),
        ("text_cfg", {"some_future_field": 1}, "unknown"),
    ],
)
def test_unsupported_variants(tower, change, why):
    register_model_configs()
    cfg = open_clip.get_model_config(TINY_MODEL)
    cfg[tower] = {**cfg[tower], **change}
    assert why in (hf_unsupported_reason(cfg) or "")


def test_supported_variants_and_preprocessing():
    register_model_configs()
    cfg = open_clip.get_model_config(TINY_MODEL)
    harmless = {**cfg, "vision_cfg": {**cfg["vision_cfg"], "patch_dropout": 0.5, "final_ln_after_pool": True}}
    assert hf_unsupported_reason(harmless) is None  # patch dropout is training-only; LN is per token
    assert "resize_mode" in hf_unsupported_reason(cfg, {"size": 32, "resize_mode": "squash"})


def test_write_refuses_unsupported_and_unmapped(tmp_path):
    register_model_configs()
    model, _, _ = _create(TINY_MODEL)
    cfg = open_clip.get_model_config(TINY_MODEL)
    cfg["text_cfg"] = {**cfg["text_cfg"], "no_causal_mask": True}
    with pytest.raises(ValueError, match="--to open_clip"):
        write_hf(model, cfg, {"size": 32}, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    with pytest.raises(ValueError, match="no transformers CLIP counterpart"):
        hf_state_dict({**model.state_dict(), "visual.attn_pool.query": torch.zeros(4, 64)})


def test_import_is_cheap():
    code = "import sys, metaclip_assets.export.hf; print(sorted({'transformers', 'open_clip', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
