"""Hugging Face `transformers` export: an open_clip CLIP as a `CLIPModel` + `CLIPProcessor` folder.

`write_hf(model, model_cfg, preprocess_cfg, out_dir)` writes what `CLIPModel.from_pretrained(DIR)` and
`CLIPProcessor.from_pretrained(DIR, backend="pil")` load offline: `config.json`, `model.safetensors`, the tokenizer
(`vocab.json` + `merges.txt` derived from open_clip's bundled BPE file, plus `tokenizer.json`/`tokenizer_config.json`)
and `preprocessor_config.json` (the model's mean/std/size; shortest-side bicubic resize, then centre crop).

Key mapping as transformers' `convert_clip_original_pytorch_to_hf.py` / `convert_metaclip_2_to_hf.py`: each
`attn.in_proj_*` splits into q/k/v, `visual.proj` and `text_projection` are transposed into Linear weights, the
activation is `quick_gelu` for the `-quickgelu` models, eos is 49407. Every open_clip tensor must be consumed and every
HF tensor set, with matching shapes, or the export fails.

What users must know (the README repeats it):
- Pass `backend="pil"` to `CLIPProcessor.from_pretrained` / `AutoImageProcessor.from_pretrained` (transformers 5;
  the deprecated `use_fast=False` does the same there and is what 4.x takes). No field of the saved config can pick
  the backend: transformers 5 saves `image_processor_type: CLIPImageProcessor` and, with torchvision installed,
  loads the torchvision-backed one, which resizes tensors rather than PIL images and differs from open_clip's eval
  transform by up to ~0.015 per pixel. The PIL-backed `CLIPImageProcessorPil` gives open_clip's pixels exactly.
- Centre crop: open_clip (torchvision `CenterCrop`) offsets by `round((resized - crop) / 2)` (round half to even),
  transformers by `(resized - crop) // 2`. When the resized long side minus the crop size is 3 mod 4 (e.g. a 640x427
  photo at 224 px: 335 - 224 = 111) the two crops sit one pixel apart: 18 of 79 COCO val photos at 224 px, whose
  normalised image features then differ by up to ~0.02 (random-init ViT-B-32); other sizes, and square images, give
  identical pixels. No processor setting changes the offset: for exact parity feed `pixel_values` made by open_clip's
  eval transform.
- Text cleaning: open_clip runs `ftfy.fix_text`, `html.unescape` (twice), whitespace collapsing and lower-casing
  before BPE; transformers' `CLIPTokenizer` only applies NFC, whitespace collapsing and lower-casing. Text with HTML
  entities (`&amp;`), mojibake (`cafÃ©`), curly quotes or ligatures tokenizes differently; clean such text with
  `open_clip.tokenizer.basic_clean` first. Plain text tokenizes to identical ids.
- Padding: open_clip pads with id 0 (the token `!`), the exported tokenizer with `<|endoftext|>` (49407) as OpenAI's
  HF exports do (a `!` pad token would be split out of every text as a special token: "!!" would change). Ids agree up
  to and including the first eos; the text feature is read there, behind a causal mask, so padding never changes it.

`hf_unsupported_reason(model_cfg)` says why a config cannot be expressed by `CLIPModel`. Maps: plain ViT vision tower
+ plain causal text transformer (incl. `custom_text` with a plain text tower), GELU or QuickGELU, `tok` pooling,
bias-free linear projections, LayerNorm with any eps; patch dropout is ignored (identity at eval), `final_ln_after_pool`
is equivalent under `tok`/eos pooling. Does not map: timm or ResNet vision towers, HF text towers/tokenizers,
attentional pooling (CoCa), layer scale, custom attention blocks (qk-norm, scaled cosine, head scale ...), average
pooling, bidirectional text (CLIPA, SigLIP), logit bias (SigLIP), biased or absent projections, non-square inputs.

transformers is imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
from pathlib import Path

_VOCAB_SIZE = 49408  # OpenAI's BPE: 256 bytes, 256 bytes + </w>, 48894 merges, 2 specials
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"  # ids 49406, 49407 (open_clip names them <start_of_text> ...)
_MARKER = "metaclip_assets_export.json"  # marks a folder this module wrote, so a re-export may replace it
_BLOCK_FIELDS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
_TOP_FIELDS = {
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "custom_text",
    "init_logit_scale",
    "init_logit_bias",
    "nonscalar_logit_scale",
    "cast_dtype",
    "output_dict",
    "multimodal_cfg",
}


def _cfg_fields(name: str) -> set[str]:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    return {f.name for f in dataclasses.fields({"vision": CLIPVisionCfg, "text": CLIPTextCfg}[name])}


def _norm_reason(cfg: dict, tower: str) -> str | None:
    if cfg.get("act_kwargs"):
        return f"{tower} act_kwargs {cfg['act_kwargs']} change the activation; transformers' CLIP has none"
    if set(cfg.get("norm_kwargs") or {}) - {"eps"}:
        return f"{tower} norm_kwargs {cfg['norm_kwargs']}: only a LayerNorm eps maps (layer_norm_eps)"
    block = [f for f in _BLOCK_FIELDS if cfg.get(f)]
    if block or cfg.get("block_type") not in (None, "default"):
        return f"{tower} uses open_clip's custom attention block ({block or cfg['block_type']}); CLIP's is plain"
    if cfg.get("ls_init_value") is not None:
        return f"{tower} has layer scale (ls_init_value); transformers' CLIP layers have no LayerScale"
    return None


def _vision_reason(v: dict) -> str | None:
    if v.get("timm_model_name"):
        return f"vision tower is timm's {v['timm_model_name']!r}; CLIPModel only has a plain ViT"
    if isinstance(v.get("layers"), (list, tuple)):
        return "vision tower is a ModifiedResNet (RN50 style); CLIPModel only has a plain ViT"
    for key in ("image_size", "patch_size"):
        val = v.get(key)
        if isinstance(val, (list, tuple)) and len(set(val)) != 1:
            return f"non-square vision {key} {val}; CLIPVisionConfig takes one int"
    width, head_width = v.get("width", 768), v.get("head_width", 64)
    if width % head_width:
        return f"vision width {width} is not a multiple of head_width {head_width}"
    if v.get("attentional_pool"):
        return "vision tower uses attentional pooling (CoCa style); CLIP pools the class token"
    if v.get("no_ln_pre"):
        return "vision tower has no ln_pre (no_ln_pre); CLIP always applies pre_layrnorm"
    if v.get("pool_type", "tok") != "tok":
        return f"vision pool_type {v['pool_type']!r}; CLIP takes the class token ('tok')"
    if v.get("pos_embed_type", "learnable") not in ("learnable", "sin_cos_2d"):  # sin-cos is a stored tensor too
        return f"vision pos_embed_type {v['pos_embed_type']!r} is not a stored table"
    # patch_dropout: identity at eval; final_ln_after_pool: LayerNorm is per token, so LN-then-pool == pool-then-LN.
    return _norm_reason(v, "vision")


def _text_reason(t: dict) -> str | None:
    if t.get("hf_model_name"):
        return f"text tower is the HF model {t['hf_model_name']!r}, not CLIP's text transformer"
    if t.get("hf_tokenizer_name") or t.get("tokenizer_mode"):
        return "text uses another tokenizer than OpenAI's BPE (hf_tokenizer_name/tokenizer_mode); ours is the BPE"
    if (t.get("tokenizer_kwargs") or {}).get("clean", "lower") != "lower":
        return f"tokenizer clean={t['tokenizer_kwargs']['clean']!r}; CLIPTokenizer only lower-cases"
    if t.get("vocab_size", _VOCAB_SIZE) != _VOCAB_SIZE:
        return f"text vocab_size {t['vocab_size']} is not the {_VOCAB_SIZE}-token OpenAI BPE the tokenizer export uses"
    if t.get("no_causal_mask"):
        return "text tower is bidirectional (no_causal_mask); CLIP's text transformer is causal"
    if t.get("embed_cls"):
        return "text tower appends a class token (embed_cls, CoCa); CLIP reads the eos token"
    pool = t.get("pool_type", "argmax")
    if pool not in ("argmax", "eos") or (pool == "eos" and t.get("eos_id") != 49407):
        return f"text pool_type {pool!r} (eos_id {t.get('eos_id')}); CLIP reads the first <|endoftext|> (49407)"
    if t.get("proj_bias"):
        return "text projection has a bias (proj_bias); CLIP's text_projection has none"
    if t.get("proj_type", "linear") != "linear":
        return f"text proj_type {t['proj_type']!r}; CLIP needs a linear text projection"
    return _norm_reason(t, "text")


def hf_unsupported_reason(model_cfg: dict, preprocess_cfg: dict | None = None) -> str | None:
    """None when transformers' `CLIPModel` (+ `CLIPProcessor`) expresses `model_cfg` (open_clip's model config, as
    `open_clip.get_model_config` gives it) and `preprocess_cfg` (optional) exactly; else why not, in one sentence.
    Unknown fields refuse too: a field this check does not know could change the forward pass."""
    unknown = set(model_cfg) - _TOP_FIELDS
    unknown |= {f"vision_cfg.{k}" for k in set(model_cfg.get("vision_cfg", {})) - _cfg_fields("vision")}
    unknown |= {f"text_cfg.{k}" for k in set(model_cfg.get("text_cfg", {})) - _cfg_fields("text")}
    if unknown:
        return f"unknown open_clip config fields {sorted(unknown)}: not checked against transformers' CLIP"
    if model_cfg.get("multimodal_cfg"):
        return "CoCa (multimodal_cfg): its text decoder and attentional pooler have no CLIPModel counterpart"
    if model_cfg.get("init_logit_bias") is not None:
        return "the model has a logit bias (SigLIP loss); CLIPModel has only logit_scale"
    reason = _vision_reason(model_cfg.get("vision_cfg", {})) or _text_reason(model_cfg.get("text_cfg", {}))
    if reason or not preprocess_cfg:
        return reason
    return _preprocess_reason(preprocess_cfg)


def _preprocess_reason(p: dict) -> str | None:
    size = p.get("size", 224)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        return f"non-square preprocess size {size}"
    if p.get("resize_mode", "shortest") != "shortest":
        return f"resize_mode {p['resize_mode']!r}: CLIPImageProcessor resizes the shortest side, then centre-crops"
    if p.get("interpolation", "bicubic") not in ("bicubic", "bilinear"):
        return f"interpolation {p['interpolation']!r} has no fixed CLIPImageProcessor resample"
    if p.get("mode", "RGB") != "RGB":
        return f"image mode {p['mode']!r}; CLIPImageProcessor converts to RGB"
    return None


def _side(val) -> int:
    return int(val[0] if isinstance(val, (list, tuple)) else val)


def hf_config(model_cfg: dict):
    """The `transformers.CLIPConfig` for an open_clip config that `hf_unsupported_reason` accepts."""
    from transformers import CLIPConfig

    v, t = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"  # nn.GELU is the exact (erf) GELU: HF's "gelu"
    embed_dim = model_cfg["embed_dim"]
    v_width, t_width = v.get("width", 768), t.get("width", 512)
    vision = {
        "hidden_size": v_width,
        "intermediate_size": int(v_width * v.get("mlp_ratio", 4.0)),  # as open_clip's mlp width
        "num_hidden_layers": v.get("layers", 12),
        "num_attention_heads": v_width // v.get("head_width", 64),
        "image_size": _side(v.get("image_size", 224)),
        "patch_size": _side(v.get("patch_size", 16)),
        "hidden_act": act,
        "layer_norm_eps": (v.get("norm_kwargs") or {}).get("eps", 1e-5),  # torch LayerNorm default
        "projection_dim": embed_dim,
    }
    text = {
        "vocab_size": t.get("vocab_size", _VOCAB_SIZE),
        "hidden_size": t_width,
        "intermediate_size": int(t_width * t.get("mlp_ratio", 4.0)),
        "num_hidden_layers": t.get("layers", 12),
        "num_attention_heads": t.get("heads", 8),
        "max_position_embeddings": t.get("context_length", 77),
        "hidden_act": act,
        "layer_norm_eps": (t.get("norm_kwargs") or {}).get("eps", 1e-5),
        "projection_dim": embed_dim,
        "pad_token_id": 49407,
        "bos_token_id": 49406,
        "eos_token_id": 49407,  # not 2: HF then pools at the first eos, which is open_clip's argmax for its tokenizer
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim)


_LAYER_RENAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_FIXED = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}


def _layer_key(key: str) -> tuple[str, str] | None:
    """(HF layer prefix, rest of the key) for a resblock tensor, else None."""
    for src, dst in (
        ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
        ("transformer.resblocks.", "text_model.encoder.layers."),
    ):
        if key.startswith(src):
            index, rest = key[len(src) :].split(".", 1)
            return f"{dst}{index}.", rest
    return None


def hf_state_dict(state_dict: dict) -> dict:
    """open_clip CLIP state dict -> transformers CLIPModel state dict. Raises on any tensor it does not map."""
    out, unmapped = {}, []
    for key, value in state_dict.items():
        key = key.removeprefix("text.")  # CustomTextCLIP keeps its text tower under text.
        value = value.detach().cpu()
        if key in _FIXED:
            out[_FIXED[key]] = value.reshape(()) if key == "logit_scale" else value  # nonscalar_logit_scale: [1]
        elif key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.T  # open_clip: x @ proj; Linear: x @ weight.T
        elif (layer := _layer_key(key)) is not None:
            prefix, rest = layer
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{name}_proj.{kind}"] = part.clone()  # own storage: safetensors rule
                continue
            module, param = rest.rsplit(".", 1)
            if module not in _LAYER_RENAMES:
                unmapped.append(key)
                continue
            out[f"{prefix}{_LAYER_RENAMES[module]}.{param}"] = value
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(f"open_clip tensors with no transformers CLIP counterpart: {unmapped[:8]} ({len(unmapped)})")
    return {k: v.contiguous() for k, v in out.items()}


def _check_against_model(state: dict, config) -> None:
    """Every CLIPModel tensor set, none extra, shapes equal (the model is built on the meta device: no memory)."""
    import torch
    from transformers import CLIPModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or extra or wrong:
        raise ValueError(
            f"open_clip -> CLIPModel mapping incomplete: missing {missing[:5]}, extra {extra[:5]}, "
            f"shape mismatch {[(k, tuple(state[k].shape), expected[k]) for k in wrong[:5]]}"
        )


def bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI CLIP's vocab.json / merges.txt content, derived from open_clip's bundled BPE file exactly as
    open_clip's `SimpleTokenizer` builds its table (special tokens under OpenAI's names)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]  # SimpleTokenizer's slice
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [_BOS, _EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != _VOCAB_SIZE or vocab[_EOS] != 49407:
        raise ValueError(f"open_clip's BPE file gave {len(vocab)} tokens, expected {_VOCAB_SIZE}")
    return vocab, merges


def hf_processor(model_cfg: dict, preprocess_cfg: dict):
    """`CLIPProcessor` (PIL image processor + BPE tokenizer) matching open_clip's eval transform and tokenizer."""
    from transformers import CLIPImageProcessorPil, CLIPProcessor, CLIPTokenizer

    vocab, merges = bpe_vocab_and_merges()
    context_length = model_cfg["text_cfg"].get("context_length", 77)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=_EOS, model_max_length=context_length)
    size = _side(preprocess_cfg.get("size", model_cfg["vision_cfg"]["image_size"]))  # never a default: the model's
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=2 if preprocess_cfg.get("interpolation") == "bilinear" else 3,  # PIL BILINEAR / BICUBIC
        image_mean=list(preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=list(preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        do_convert_rgb=True,
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _is_previous_export(path: Path) -> bool:
    try:
        return json.loads((path / _MARKER).read_text()).get("format") == "hf"
    except (OSError, ValueError):
        return False


def write_hf(model, model_cfg: dict, preprocess_cfg: dict, out_dir) -> Path:
    """Write `model` (an open_clip `CLIP`) as a transformers `CLIPModel` + `CLIPProcessor` folder at `out_dir`.

    Load it with `CLIPModel.from_pretrained(DIR)` and `CLIPProcessor.from_pretrained(DIR, backend="pil")` (offline
    is fine; `backend="pil"` picks the image processor that matches open_clip's preprocessing, see the module
    docstring). The folder is written beside `out_dir` and renamed into place. An existing `out_dir` is replaced only
    when empty or written by this function before (it holds `metaclip_assets_export.json`); anything else raises.
    """
    import safetensors.torch

    reason = hf_unsupported_reason(model_cfg, preprocess_cfg)
    if reason:
        raise ValueError(f"cannot export to transformers' CLIPModel: {reason}; export with --to open_clip instead")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_previous_export(out))):
        raise FileExistsError(f"{out} exists and is not an earlier hf export: pass an empty or new --out folder")
    config = hf_config(model_cfg)
    state = hf_state_dict(model.state_dict())
    _check_against_model(state, config)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        config.save_pretrained(tmp)
        safetensors.torch.save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        processor = hf_processor(model_cfg, preprocess_cfg)
        processor.save_pretrained(tmp)  # processor_config.json (transformers 5) + tokenizer files
        processor.image_processor.save_pretrained(tmp)  # preprocessor_config.json: transformers 4.x reads this one
        vocab, merges = bpe_vocab_and_merges()  # the classic files too: transformers 4.x and other BPE readers
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        (tmp / _MARKER).write_text(json.dumps({"format": "hf", "load_processor_with": {"backend": "pil"}}) + "\n")
        from metaclip_assets.export.run import publish  # the one swap-into-place of every export folder

        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
