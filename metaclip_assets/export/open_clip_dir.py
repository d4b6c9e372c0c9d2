"""open_clip's hub layout: the folder `open_clip.create_model_and_transforms('local-dir:DIR')` and
`open_clip.get_tokenizer('local-dir:DIR')` load, and the one open_clip's `push_to_hf_hub` uploads.

The files are what open_clip's own `push_to_hf_hub.save_for_hf` writes: `open_clip_config.json` (`model_cfg`: the
architecture's full config, so a config open_clip does not know, such as our `tiny-clip`, needs no registration;
`preprocess_cfg`: mean, std, interpolation, resize mode) and `open_clip_model.safetensors` (the model's state
dict). We add `metaclip_export.json` (where the weights came from) and a model card `README.md`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# torch, open_clip and the training package are imported where used: the Dagster code location imports this module
# (through the exported_model asset) and must load without torch.

CONFIG_NAME = "open_clip_config.json"  # open_clip.constants.HF_CONFIG_NAME
WEIGHTS_NAME = "open_clip_model.safetensors"  # open_clip.constants.HF_SAFE_WEIGHTS_NAME
PROVENANCE_NAME = "metaclip_export.json"


@dataclass
class LoadedCheckpoint:
    """A checkpoint as an open_clip model, with the config that rebuilds it and the facts it carried."""

    model: Any  # an open_clip CLIP module
    arch: str
    model_cfg: dict
    facts: dict = field(default_factory=dict)  # step, snapshot, samples_seen, ... (what rode along)


def load_checkpoint(path: str | os.PathLike, arch: str | None = None) -> LoadedCheckpoint:
    """Our checkpoints (open_clip layout, or `{'model': ...}` of earlier versions) and open_clip_train's own
    (`{'state_dict': ...}`, which does not name its architecture: pass `arch`)."""
    import open_clip

    from metaclip_assets.training import checkpoint, models

    state = checkpoint.load(path)
    name = arch or checkpoint.model_name(state)
    if not name:
        raise ValueError(
            f"{path} does not name its architecture (open_clip_train's checkpoints do not): pass it, "
            "e.g. --arch ViT-B-32-quickgelu"
        )
    models.register_model_configs()
    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ValueError(f"{path}: {name!r} is not an open_clip architecture (see open_clip.list_models())")
    model = open_clip.create_model(name, pretrained=None, device="cpu")
    try:
        missing, unexpected = model.load_state_dict(checkpoint.model_state(state), strict=False)
    except RuntimeError as e:  # shapes differ: another architecture
        raise ValueError(f"{path} does not fit {name} ({str(e).splitlines()[1].strip()}): is --arch right?") from None
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {name}: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
            "is --arch right?"
        )
    model.eval()
    config = state.get("config") or {}
    facts = {
        "step": state.get("step"),
        "samples_seen": state.get("samples_seen"),
        "snapshot": config.get("snapshot"),
        "strategy": config.get("strategy"),
        "final_loss": state.get("final_loss"),
    }
    return LoadedCheckpoint(model, name, dict(model_cfg), {k: v for k, v in facts.items() if v is not None})


def preprocess_cfg(model) -> dict:
    """As open_clip's `save_config_for_hf` derives it from the model."""
    cfg = {"mean": list(model.visual.image_mean), "std": list(model.visual.image_std)}
    other = getattr(model.visual, "preprocess_cfg", {}) or {}
    for key in ("interpolation", "resize_mode"):
        if key in other:
            cfg[key] = other[key]
    return cfg


def model_card(loaded: LoadedCheckpoint, provenance: dict) -> str:
    facts = "\n".join(f"- {k}: {v}" for k, v in provenance.items() if not isinstance(v, dict | list))
    return f"""---
library_name: open_clip
tags:
- clip
- metaclip
- zero-shot-image-classification
---
# {loaded.arch} trained by metaclip-assets

A CLIP model ({loaded.arch}, open_clip) trained on MetaCLIP-curated data by metaclip-assets.

{facts}

```python
import open_clip
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:<this folder>")
tokenizer = open_clip.get_tokenizer("local-dir:<this folder>")
```
"""


def write(loaded: LoadedCheckpoint, out_dir: str | os.PathLike, provenance: dict) -> Path:
    """Write the folder's files into `out_dir` (an empty or new directory; the caller publishes it atomically)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous CPU tensors (a transposed view is not); open_clip's models share none.
    save_file({k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}, out / WEIGHTS_NAME)
    config = {"model_cfg": loaded.model_cfg, "preprocess_cfg": preprocess_cfg(loaded.model)}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (out / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    (out / "README.md").write_text(model_card(loaded, provenance))
    return out
