"""`metaclip-assets evaluate`: zero-shot and retrieval numbers for any open_clip model, outside Dagster.

The model is whatever `model_eval.load_model` reads (`local-dir:DIR`, a checkpoint of ours, an open_clip(_train)
checkpoint with `--arch`); the sets are the ones the `eval_metrics` asset takes, parsed by the same `datasets`
code, plus `--imagenet FOLDER` (wnid folders, any subset). Offline; no MLflow, no cache. Writes
`<out>/results.json` and prints a summary. No torch at import: argument errors come back at once.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from metaclip_assets.evaluation import datasets

RESULTS = "results.json"
IMAGENET = "imagenet"  # the set name --imagenet gets


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="local-dir:DIR (open_clip's hub layout), or a checkpoint file (ours, open_clip's, open_clip_train's)",
    )
    p.add_argument("--arch", help="open_clip architecture of a checkpoint that does not name it (open_clip_train's)")
    p.add_argument("--imagenet", metavar="FOLDER", help="ImageNet-style folder <FOLDER>/<wnid>/<image>, any subset")
    p.add_argument(
        "--classnames",
        metavar="FILE",
        help="class names for --imagenet: a JSON object {folder: name}, a list, or 'openai_imagenet'",
    )
    p.add_argument("--templates", metavar="FILE", help="prompt templates for --imagenet (default: OpenAI's 80)")
    p.add_argument(
        "--imagenet-label-space",
        choices=datasets.LABEL_SPACES,
        help="classify among the classes present (default without --classnames) or every class of the names",
    )
    p.add_argument("--max-per-class", type=int, help="at most this many --imagenet images per class")
    p.add_argument(
        "--zeroshot",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="zero-shot set: NAME=PATH[,format=wds,classnames=FILE,classnames_key=K,templates=FILE,...] or NAME={json}",
    )
    p.add_argument(
        "--retrieval",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="retrieval set: NAME=FILE[,format=coco,image_dir=DIR,max_images=N] or NAME={json}",
    )
    p.add_argument("--out", required=True, metavar="DIR", help=f"where {RESULTS} is written")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")


def set_specs(args: argparse.Namespace) -> list[dict]:
    """The command line's sets as the config dicts `datasets.from_spec` reads."""
    specs = []
    if args.imagenet:
        spec = {"name": IMAGENET, "path": args.imagenet, "classnames": args.classnames, "templates": args.templates}
        spec.update(label_space=args.imagenet_label_space, max_per_class=args.max_per_class)
        specs.append({k: v for k, v in spec.items() if v is not None})
    elif args.classnames or args.templates or args.imagenet_label_space or args.max_per_class:
        raise ValueError("--classnames, --templates, --imagenet-label-space and --max-per-class go with --imagenet")
    specs += [{"kind": "zeroshot", **datasets.parse_spec(s)} for s in args.zeroshot]
    specs += [{"kind": "retrieval", **datasets.parse_spec(s)} for s in args.retrieval]
    names = [s["name"] for s in specs]
    if not specs:
        raise ValueError("nothing to evaluate: pass --imagenet FOLDER, --zeroshot NAME=SPEC or --retrieval NAME=SPEC")
    if len(set(names)) != len(names):
        raise ValueError(f"set names must differ: {names}")
    return specs


def evaluate(args: argparse.Namespace, log=print) -> dict:
    """Load every set first (a bad folder fails before the model loads), then the model, then score."""
    from metaclip_assets.evaluation import model_eval, runner

    t0 = time.perf_counter()
    sets = [datasets.from_spec(s) for s in set_specs(args)]
    device = model_eval.pick_device(args.device)
    lm = model_eval.load_model(args.model, device, args.arch)
    log(f"model {lm.name} from {args.model} on {device}")
    result: dict = {
        "model": {"spec": args.model, "arch": lm.name, "step": lm.step, "device": str(device)},
        "zeroshot": {},
        "retrieval": {},
    }
    for ds in sets:
        if isinstance(ds, datasets.ZeroShotSet):
            m, per_class = model_eval.zero_shot_per_class(lm, ds, args.batch_size, args.workers)
            result["zeroshot"][ds.name] = {
                **m,
                "n_samples": int(m["n_samples"]),
                "n_classes": int(m["n_classes"]),
                "per_class_recall": per_class,
                "label_space": ds.label_space,
                "classnames_source": ds.classnames_source,
                "templates": {"count": len(ds.templates), "source": ds.templates_source},
                "path": ds.source,
            }
        else:
            m = model_eval.retrieval(lm, ds, args.batch_size, args.workers)
            result["retrieval"][ds.name] = {**m, "path": ds.source}
    # The asset's check, on the numbers alone.
    numbers = {f: {n: _floats(m) for n, m in result[f].items()} for f in ("zeroshot", "retrieval")}
    result["finite"] = runner.finite_check({**numbers, "matrix": None, "tic": None})
    result["seconds"] = round(time.perf_counter() - t0, 2)
    write_atomic(Path(args.out) / RESULTS, json.dumps(result, indent=2))
    return result


def _floats(m: dict) -> dict[str, float]:
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summary(result: dict) -> str:
    lines = [f"{result['model']['arch']} ({result['model']['spec']}) on {result['model']['device']}:"]
    for name, m in result["zeroshot"].items():
        lines.append(
            f"  {name}: top-1 {m['top1']:.2%}  top-5 {m['top5']:.2%}  mean per-class recall "
            f"{m['mean_per_class_recall']:.2%}  ({m['n_samples']} images, {m['n_classes']} classes [{m['label_space']}], "
            f"{m['templates']['count']} templates)"
        )
    for name, m in result["retrieval"].items():
        lines.append(
            f"  {name}: image->text R@1/5/10 {m['i2t_r1']:.2%}/{m['i2t_r5']:.2%}/{m['i2t_r10']:.2%}  "
            f"text->image {m['t2i_r1']:.2%}/{m['t2i_r5']:.2%}/{m['t2i_r10']:.2%}  "
            f"({int(m['n_images'])} images, {int(m['n_texts'])} captions)"
        )
    if not result["finite"]["passed"]:
        lines.append(f"  NOT FINITE: {result['finite']['problems']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    result = evaluate(args)
    print(summary(result))
    print(f"wrote {Path(args.out) / RESULTS}")
    return 0 if result["finite"]["passed"] else 1
