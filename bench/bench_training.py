"""Training throughput: our pipeline on real webdataset shards next to open_clip's own synthetic-data rate.

Both runs use the same process, model config, batch size, precision and training step (metaclip_assets.training's
Trainer: AdamW, ClipLoss, AMP on GPU); only the batch source differs:
  - "shards": our resampled webdataset stream (JPEG decode + open_clip's train transform + tokenizer),
  - "synthetic": open_clip_train.data.SyntheticDataset (what `--dataset-type synthetic` uses: one blank image and
    a dummy caption through the same transform), in a DataLoader with the same worker count.
The synthetic rate is the ceiling the model allows on this device; shards / synthetic is the share the input
pipeline keeps. Rates are steady-state: the first --skip steps (CUDA init, cudnn autotuning) are excluded.
A third row runs open_clip's own trainer (`python -m open_clip_train.main --dataset-type webdataset`) on the same
shards with the same model, batch, precision and workers: its logged samples/s after --skip steps, for comparison.

GPU (the benchmark the issue asks for; a few hundred ViT-B-32 steps):
  python bench/bench_training.py --shards /data/shards/CC-MAIN-2024-10 --steps 300 --batch-size 256 --workers 8
CPU smoke check (tiny model, toy shards made on the fly, seconds):
  python bench/bench_training.py --cpu-smoke
Add --record to append the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench._common import loadavg, machine_info, md_table, record  # noqa: E402
from metaclip_assets.training.config import TrainConfig  # noqa: E402
from metaclip_assets.training.loop import TRAIN_LOG, Trainer  # noqa: E402


def synthetic_batches(trainer: Trainer, n_samples: int, batch_size: int, workers: int):
    """open_clip's synthetic dataset, fed exactly as open_clip_train feeds it (DataLoader, drop_last)."""
    from open_clip_train.data import SyntheticDataset

    size = trainer.model.visual.image_size
    dataset = SyntheticDataset(
        transform=trainer.preprocess,
        image_size=tuple(size) if isinstance(size, (tuple, list)) else (size, size),
        dataset_size=n_samples,
        tokenizer=trainer.tokenizer,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        drop_last=True,
        pin_memory=trainer.device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return iter(loader)


def steady_rate(out_dir: Path, skip: int, batch_size: int) -> float:
    rows = [json.loads(line) for line in (out_dir / TRAIN_LOG).read_text().splitlines()]
    rows = rows[skip - 1 :] if skip > 0 else [{"t": 0.0, "step": 0}] + rows
    return (rows[-1]["step"] - rows[0]["step"]) * batch_size / (rows[-1]["t"] - rows[0]["t"])


def run_one(kind: str, base: dict, args, work: Path) -> dict:
    cfg = TrainConfig(**{**base, "output_dir": str(work / kind), "snapshot": f"bench-{kind}"})
    trainer = Trainer(cfg, log=lambda m: print(f"  [{kind}] {m}", flush=True)).prepare()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    batches = (
        synthetic_batches(trainer, cfg.samples_budget, cfg.batch_size, cfg.workers) if kind == "synthetic" else None
    )
    result = trainer.run(batches=batches)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    del trainer, batches  # free the model before the next run, so its peak memory is its own
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {
        "kind": kind,
        "samples_per_s": steady_rate(Path(cfg.output_dir), args.skip, cfg.batch_size),
        "samples_per_s_all_steps": result["samples_per_s"],
        "first_loss": result["first_loss"],
        "last_loss": result["last_loss"],
        "peak_gpu_mem_gb": peak,
        "device": result["device"],
        "precision": result["precision"],
    }


def open_clip_train_rate(args, shards: list[str], work: Path, precision: str) -> dict:
    """open_clip_train on the same shards; its per-step log line carries the rate ("Batch (t): 0.04, 398.2/s")."""
    import re
    import subprocess
    import time

    model = args.model
    if args.model == "tiny-clip":  # not in open_clip's registry: hand it over as a hub folder
        from metaclip_assets.export import open_clip_dir

        trainer = Trainer(TrainConfig(snapshot="x", output_dir=str(work / "x"), model="tiny-clip")).prepare()
        loaded = open_clip_dir.LoadedCheckpoint(
            trainer.model, "tiny-clip", __import__("open_clip").get_model_config("tiny-clip")
        )
        model = f"local-dir:{open_clip_dir.write(loaded, work / 'tiny-hub', {})}"
    cmd = [
        sys.executable, "-m", "open_clip_train.main", "--model", model,
        "--train-data", "::".join(shards), "--dataset-type", "webdataset",
        "--train-num-samples", str(args.steps * args.batch_size), "--batch-size", str(args.batch_size),
        "--epochs", "1", "--precision", precision, "--workers", str(args.workers),
        "--device", "cuda" if torch.cuda.is_available() else "cpu", "--log-every-n-steps", "1",
        "--logs", str(work / "oct-logs"), "--name", "bench", "--save-frequency", "0", "--report-to", "",
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"open_clip_train failed: {done.stderr[-2000:]}")
    rates = [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.]+)/s,", done.stdout + done.stderr)]
    steady = rates[args.skip :] or rates
    return {
        "kind": "open_clip_train",
        "samples_per_s": sorted(steady)[len(steady) // 2],
        "samples_per_s_all_steps": args.steps * args.batch_size / (time.perf_counter() - t0),
        "first_loss": float("nan"),
        "last_loss": float("nan"),
        "peak_gpu_mem_gb": 0.0,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "precision": precision,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-32-quickgelu")
    p.add_argument("--shards", help="a directory of .tar shards (or a glob)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--skip", type=int, default=20, help="warm-up steps left out of the rate")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on toy shards, a few steps, on CPU")
    p.add_argument("--record", action="store_true", help="append the result table to bench/RESULTS.md")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        if args.cpu_smoke:
            from metaclip_assets.training.toy_data import make_toy_shards

            args.model, args.steps, args.skip, args.batch_size = "tiny-clip", 8, 2, 16
            args.workers, args.threads = 0, args.threads or 1
            shards = make_toy_shards(work / "shards", n_shards=1, per_shard=64)
        else:
            if not args.shards:
                p.error("--shards is required (or --cpu-smoke)")
            pattern = os.path.join(args.shards, "*.tar") if os.path.isdir(args.shards) else args.shards
            shards = sorted(glob.glob(pattern))
            if not shards:
                p.error(f"no shards match {pattern}")
        base = dict(
            model=args.model,
            shard_urls=shards,
            batch_size=args.batch_size,
            samples_budget=args.steps * args.batch_size,
            workers=args.workers,
            precision=args.precision,
            threads=args.threads,
            tracking_uri="none",
            checkpoint_every=10**9,
            log_every=max(1, args.steps // 10),
            progress_every_s=10.0,
            shuffle_buffer=min(1000, 4 * args.batch_size),
        )
        info = machine_info()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info.update({"torch": torch.__version__, "shards": f"{len(shards)} files", "steps": str(args.steps)})
        results = [run_one(kind, base, args, work) for kind in ("shards", "synthetic")]
        results.append(open_clip_train_rate(args, shards, work, results[0]["precision"]))

    shards_rate, synth_rate = results[0]["samples_per_s"], results[1]["samples_per_s"]
    rows = [
        [
            r["kind"],
            args.model,
            r["device"],
            r["precision"],
            args.batch_size,
            args.workers,
            round(r["samples_per_s"], 1),
            round(r["samples_per_s_all_steps"], 1),
            round(r["peak_gpu_mem_gb"], 2),
            f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}",
        ]
        for r in results
    ]
    table = md_table(
        [
            "data",
            "model",
            "device",
            "precision",
            "batch",
            "workers",
            "samples/s (steady)",
            "samples/s (all)",
            "peak GPU GiB",
            "loss",
        ],
        rows,
    )
    summary = (
        f"{table}\n\nshards / synthetic = {shards_rate / synth_rate:.2f}; "
        f"ours / open_clip_train (same shards) = {shards_rate / results[2]['samples_per_s']:.2f} "
        "(open_clip_train's rate: median of its per-step log after --skip steps; its 'all' includes start-up)"
    )
    print(summary)
    if args.record:
        record(
            f"training throughput: {args.model}{' (CPU smoke)' if args.cpu_smoke else ''}", info, summary, [loadavg()]
        )
    return {
        "shards": results[0],
        "synthetic": results[1],
        "open_clip_train": results[2],
        "ratio": shards_rate / synth_rate,
    }


if __name__ == "__main__":
    main()
