"""Exports: a trained checkpoint leaves the project in the formats other tools load.

- `open_clip_dir`: open_clip's hub layout (`open_clip_config.json` + safetensors), loadable with
  `open_clip.create_model_and_transforms('local-dir:DIR')` and pushable with open_clip's `push_to_hf_hub`.
- `hf`: a transformers `CLIPModel` + `CLIPProcessor` folder, loadable with `from_pretrained(DIR)` offline.
- `run`: both, from one checkpoint (what `metaclip-assets export` and the `exported_model` asset call).

Plain modules: no Dagster here. Reads checkpoints through `training.checkpoint` (both the open_clip layout the trainer
writes and the `{'model': ...}` layout of earlier versions). Must not import `crawl`, `metadata`, `curation`,
`acquisition`, `evaluation`, `sample`, `defs` or Dagster.
"""
