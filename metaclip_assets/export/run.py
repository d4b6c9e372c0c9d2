"""One export of one checkpoint: load it once, write each format into a temp folder beside the target, then swap it
in (a reader sees the old export or the new one, never half of one), and say how to load the result.

What `metaclip-assets export` and the `exported_model` asset call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from metaclip_assets.export import open_clip_dir
from metaclip_assets.storage import Storage, local_files

FORMATS = ("open_clip", "hf")
# A folder holding one of these was written by us: replacing it loses nothing of the user's.
_MARKERS = (open_clip_dir.PROVENANCE_NAME, "metaclip_assets_export.json")  # hf.py's marker


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def usage(fmt: str, folder: str | os.PathLike) -> str:
    """The three lines a user pastes to load an export."""
    folder = os.fspath(folder)
    if fmt == "open_clip":
        return (
            "import open_clip\n"
            f"model, _, preprocess = open_clip.create_model_and_transforms('local-dir:{folder}')\n"
            f"tokenizer = open_clip.get_tokenizer('local-dir:{folder}')"
        )
    if fmt == "hf":
        return (
            "from transformers import CLIPModel, CLIPProcessor\n"
            f"model = CLIPModel.from_pretrained('{folder}')\n"
            f"processor = CLIPProcessor.from_pretrained('{folder}', backend='pil')  # open_clip's exact pixels"
        )
    raise ValueError(f"unknown export format {fmt!r}: one of {', '.join(FORMATS)}")


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not any((out / m).exists() for m in _MARKERS))):
        raise FileExistsError(
            f"{out} exists and is not an earlier export of ours: pass an empty or new folder (or remove it)"
        )


def publish(tmp: Path, out: Path) -> Path:
    """Swap a finished folder into place; an earlier export there is replaced, never merged with."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def remove_stale(out: Path) -> None:
    """A process killed mid-export leaves its temp folder beside the target: the next export clears it."""
    for stale in out.parent.glob(f".{out.name}.*-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _write(fmt: str, loaded: open_clip_dir.LoadedCheckpoint, tmp: Path, provenance: dict) -> None:
    if fmt == "open_clip":
        open_clip_dir.write(loaded, tmp, provenance)
        return
    from metaclip_assets.export import hf

    preprocess = dict(loaded.model.visual.preprocess_cfg)  # size included: the eval transform's full description
    reason = hf.hf_unsupported_reason(loaded.model_cfg, preprocess)
    if reason:
        raise ValueError(f"{loaded.arch} cannot be exported to transformers' CLIPModel: {reason}")
    hf.write_hf(loaded.model, loaded.model_cfg, preprocess, tmp)
    (tmp / open_clip_dir.PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, default=str) + "\n")


def export(
    checkpoint: str | os.PathLike, targets: dict[str, str | os.PathLike], arch: str | None = None
) -> dict[str, dict]:
    """Write each `{format: folder}` of `targets` from one checkpoint. Returns per format its folder, files and
    the lines that load it."""
    for fmt in targets:
        usage(fmt, "")  # an unknown format fails before the (slow) load
    outs = {fmt: Path(folder).resolve() for fmt, folder in targets.items()}
    for out in outs.values():
        _check_target(out)
    loaded = open_clip_dir.load_checkpoint(checkpoint, arch)
    provenance = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "arch": loaded.arch,
        **loaded.facts,
    }
    results = {}
    for fmt, out in outs.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            _write(fmt, loaded, tmp, {**provenance, "format": fmt})
            publish(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results[fmt] = {
            "folder": str(out),
            "files": sorted(p.name for p in out.iterdir()),
            "bytes": sum(p.stat().st_size for p in out.iterdir() if p.is_file()),
            "usage": usage(fmt, out),
        }
    return results


def export_in_storage(
    storage: Storage, checkpoint_key: str, out_key: str, formats: tuple[str, ...] | list[str] = FORMATS
) -> dict[str, dict]:
    """`export` for the `exported_model` asset: the checkpoint and `<out_key>/<format>/` under the data root, which
    may be an object store (the checkpoint is then fetched to a temp file and each export uploaded whole)."""
    if not storage.exists(checkpoint_key):
        raise FileNotFoundError(
            f"checkpoint {storage.uri(checkpoint_key)} is missing: materialize clip_checkpoint for this snapshot "
            "(with the same model and experiment) first"
        )
    with local_files(storage, [checkpoint_key]) as [ckpt]:
        if storage.is_local:
            results = export(ckpt, {f: storage.local_path(f"{out_key}/{f}") for f in formats})
        else:
            with tempfile.TemporaryDirectory(prefix="metaclip-export-") as tmp:
                results = export(ckpt, {f: Path(tmp) / f for f in formats})
                for f, r in results.items():
                    if storage.exists(f"{out_key}/{f}"):  # replaced whole, never merged with an earlier export
                        storage.fs.rm(storage.path(f"{out_key}/{f}"), recursive=True)
                    storage.fs.put(r["folder"], storage.path(f"{out_key}/{f}"), recursive=True)
                    r.update(folder=storage.uri(f"{out_key}/{f}"), usage=usage(f, storage.uri(f"{out_key}/{f}")))
    for r in results.values():
        r["checkpoint"] = storage.uri(checkpoint_key)
    return results
