"""The training loop: OpenAI's CLIP recipe on open_clip, resumable, continual (TiC-CLIP), tracked in MLflow."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import open_clip
import torch

from metaclip_assets import settings
from metaclip_assets.training import checkpoint, data, distributed, models
from metaclip_assets.training.config import TrainConfig, lr_at
from metaclip_assets.training.tracking import RUN_FILE, Tracker, dataset_input, read_run_record

TRAIN_LOG = "train_log.jsonl"
RESULT = "result.json"


def code_version() -> str:
    """$METACLIP_CODE_VERSION (set in the training image), else `git describe` of the checkout (dev, CI), else
    the installed package version."""
    if settings.code_version():
        return settings.code_version()
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metaclip-assets")
    except PackageNotFoundError:
        return "unknown"


def files_sha256(paths: list[str]) -> str | None:
    """One hash over the data card files (name + bytes, sorted by name): the data a model saw, in one param."""
    present = sorted(p for p in paths if os.path.isfile(p))
    if not present:
        return None
    h = hashlib.sha256()
    for p in present:
        h.update(os.path.basename(p).encode() + b"\0" + Path(p).read_bytes())
    return h.hexdigest()


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.output_dir)
        self._stop_signal: int | None = None

    # ---- setup: model, optimizer, and where training starts from -----------------------------------------
    def prepare(self) -> Trainer:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # torchrun's process group (or a group of one); under torchrun each rank takes its LOCAL_RANK's GPU.
        self.group = distributed.init(cfg.device)
        if not self.group.is_main:  # the pod log carries rank 0's Pipes messages: no other rank may write into it
            distributed.redirect_output(self.out / "logs" / f"rank-{self.group.rank}.log")
        self.device = self.group.device
        self.world_size = self.group.world_size
        self.global_batch = cfg.batch_size * self.world_size
        on_cuda = self.device.type == "cuda"
        self.precision = ("amp" if on_cuda else "fp32") if cfg.precision == "auto" else cfg.precision
        if on_cuda:  # as open_clip_train: TF32 matmuls, cudnn autotuning
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.model, self.preprocess, self.tokenizer = models.build(cfg.model, self.device)
        # open_clip's loss over features gathered from every rank: each rank scores its rows against all columns
        # (local_loss) and gradients flow back through the gather, so the mean over ranks is the 1-process loss
        # of the global batch, and DDP's averaged gradient is its gradient.
        self.loss_fn = open_clip.ClipLoss(
            local_loss=self.group.distributed,
            gather_with_grad=self.group.distributed,
            cache_labels=True,
            rank=self.group.rank,
            world_size=self.world_size,
        )
        self.optimizer = torch.optim.AdamW(
            models.param_groups(self.model, cfg.weight_decay), lr=cfg.base_lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "amp" and on_cuda else None
        self.step = self.samples_seen = 0
        self.resumed_from: int | None = None

        latest = self.out / checkpoint.LATEST
        checkpoint.remove_stale_temps(latest)  # a process killed while saving leaves one
        if latest.exists():
            state = checkpoint.load(latest)
            if state["fingerprint"] == cfg.fingerprint():
                self.model.load_state_dict(checkpoint.model_state(state))
                self.optimizer.load_state_dict(state["optimizer"])
                if self.scaler is not None and state.get("scaler"):
                    self.scaler.load_state_dict(state["scaler"])
                checkpoint.set_rng_state(state["rng"])
                self.step, self.samples_seen = state["step"], state["samples_seen"]
                if state.get("world_size", 1) != self.world_size:
                    # Another world size: the budget is in samples, so the step count follows the samples seen.
                    self.step = self.samples_seen // self.global_batch
                    self.log(f"world size {state.get('world_size', 1)} -> {self.world_size}: step {self.step}")
                self.resumed_from = self.step
                self.log(f"resumed from {latest} at step {self.step} ({self.samples_seen:,} samples seen)")
            else:
                self.log(f"warning: {latest} belongs to another training config; starting over")
                if self.group.is_main:
                    (self.out / RUN_FILE).unlink(missing_ok=True)
        if self.resumed_from is None and cfg.warm_started:
            if not os.path.isfile(cfg.warm_start_from):
                raise FileNotFoundError(
                    f"warm start checkpoint {cfg.warm_start_from} is missing: train the previous "
                    "snapshot first (or use strategy 'from_scratch')"
                )
            self.model.load_state_dict(checkpoint.model_state(checkpoint.load(cfg.warm_start_from)))
            self.log(f"warm start from {cfg.warm_start_from} (fresh optimizer and schedule, no warmup)")
        # What the steps run; self.model stays the plain module (saved, clamped, evaluated).
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.group.distributed
            else self.model
        )
        return self

    def _save_latest(self) -> None:
        if not self.group.is_main:  # rank 0 writes; the others hold the same weights
            return
        checkpoint.save_atomic(
            {
                "state_dict": self.model.state_dict(),  # open_clip's layout (see checkpoint.py)
                "model_name": self.cfg.model,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "step": self.step,
                "samples_seen": self.samples_seen,
                "world_size": self.world_size,
                "rng": checkpoint.rng_state(),
                "config": self.cfg.to_dict(),
                "fingerprint": self.cfg.fingerprint(),
            },
            self.out / checkpoint.LATEST,
        )

    def _on_signal(self, signum, _frame) -> None:  # K8s eviction/preemption sends SIGTERM first
        self._stop_signal = signum

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, batches=None) -> dict:
        """Train to the budget. `batches` replaces the shard stream (the benchmark feeds open_clip's synthetic data
        through the very same step)."""
        cfg = self.cfg
        if not hasattr(self, "model"):
            self.prepare()
        main, group = self.group.is_main, self.group
        log = self.log if main else (lambda message: None)  # rank 0 speaks (Pipes, stdout) for all
        self.out.mkdir(parents=True, exist_ok=True)
        if main:  # a replay buffer is built once, by rank 0; the others then find it
            plan = data.plan_data(cfg, log)
        group.barrier()
        if not main:
            plan = data.plan_data(cfg, log)
        log(f"data: {json.dumps(plan.summary())}")
        uri = cfg.resolve_tracking_uri() if main else None
        tracker = Tracker(uri, cfg.experiment, cfg.mlflow_ui_url) if uri else None
        data_card_sha = files_sha256(cfg.data_card_paths)
        if tracker:
            tracker.start(
                cfg.output_dir,
                run_name=f"{cfg.snapshot}/{cfg.model}",
                tags={"snapshot": cfg.snapshot, "model": cfg.model, "t": str(cfg.t), "strategy": cfg.strategy},
            )
            tracker.log_params(
                {
                    **cfg.to_dict(),
                    "t": cfg.t,
                    "total_steps": cfg.total_steps_for(self.world_size),
                    "world_size": self.world_size,
                    "global_batch": self.global_batch,
                    "base_lr_effective": cfg.base_lr,
                    "warmup_effective": cfg.warmup_for(self.world_size),
                    "precision_effective": self.precision,
                    "device_type": self.device.type,
                    "data_card_sha256": data_card_sha or "none",
                    "code_version": code_version(),
                    "shards_current": len(plan.current),
                    "shards_replay": len(plan.replay),
                    "replay_weight": plan.replay_weight,
                    "replay_buffer_samples_actual": plan.buffer_samples,
                    "fingerprint": cfg.fingerprint(),
                }
            )
            config_file = self.out / "train_config.json"
            config_file.write_text(json.dumps(cfg.to_dict(), indent=2))
            tracker.log_artifact(config_file)
            for p in cfg.data_card_paths:
                if os.path.isfile(p):
                    tracker.log_artifact(p, "data_card")
            curation = read_run_record(cfg.data_card_paths, data_card_sha)
            if curation:  # one MLflow view from crawl to metrics: the curation run of the data trained on
                tracker.set_tags({"curation_run_id": curation["run_id"], "curation_run_url": curation["url"]})
                if curation.get("dataset"):
                    tracker.client.log_inputs(tracker.run_id, [dataset_input(curation["dataset"], "training")])
            log(f"mlflow run {tracker.run_id}: {tracker.run_url}")

        log_path = self.out / TRAIN_LOG
        history = self._load_history(log_path, write=main)
        if batches is None:  # reseeded by the resume step: a resumed run draws new samples, not the same ones again
            batches = data.batches(
                plan,
                self.preprocess,
                self.tokenizer,
                cfg.batch_size,
                seed=cfg.seed + self.step,
                shuffle_buffer=cfg.shuffle_buffer,
                workers=cfg.workers,
                rank=group.rank,
                world_size=self.world_size,
            )
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "amp_bf16" else torch.float16)
            if self.precision.startswith("amp") and self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        # Signal handlers can only be set from the main thread (an embedding caller may use another one).
        on_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM,)} if on_main else {}
        total, warmup = cfg.total_steps_for(self.world_size), cfg.warmup_for(self.world_size)
        pending: list[tuple[int, dict]] = []
        started_step, t_start = self.step, time.perf_counter()
        t_interval, n_interval, data_wait = t_start, 0, 0.0
        last_progress = t_start
        loss_value = float("nan")
        status = "FAILED"
        try:
            with log_path.open("a") if main else open(os.devnull, "w") as log_file:
                while self.step < total:
                    lr = lr_at(self.step, cfg.base_lr, warmup, total)
                    for param_group in self.optimizer.param_groups:
                        param_group["lr"] = lr
                    t0 = time.perf_counter()
                    images, texts = next(batches)
                    images = images.to(self.device, non_blocking=True)
                    texts = texts.to(self.device, non_blocking=True)
                    data_wait += time.perf_counter() - t0
                    self.model.train()
                    self.optimizer.zero_grad(set_to_none=True)
                    with autocast:
                        image_features, text_features, logit_scale = self.ddp(images, texts)[:3]
                        loss = self.loss_fn(image_features, text_features, logit_scale)
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                        if cfg.grad_clip_norm:
                            self.scaler.unscale_(self.optimizer)
                            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        loss.backward()
                        if cfg.grad_clip_norm:
                            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
                        self.optimizer.step()
                    with torch.no_grad():  # as OpenCLIP: the temperature is capped at 100
                        logit_scale_param = self.model.logit_scale
                        logit_scale_param.clamp_(0, math.log(100))
                    loss_value = group.mean(loss.item())  # every rank sees the global batch's loss
                    self.step += 1
                    self.samples_seen += images.shape[0] * self.world_size  # equal batches (partial=False)
                    n_interval += images.shape[0] * self.world_size
                    row = {
                        "step": self.step,
                        "loss": loss_value,
                        "lr": lr,
                        "samples_seen": self.samples_seen,
                        "t": round(time.perf_counter() - t_start, 4),
                    }  # seconds into this process's training
                    history.append(row)
                    log_file.write(json.dumps(row) + "\n")
                    pending.append((self.step, {"loss": loss_value, "lr": lr}))
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(f"loss is {loss_value} at step {self.step}")

                    now = time.perf_counter()
                    if self.step % cfg.log_every == 0 or self.step == total:
                        rate = n_interval / (now - t_interval)
                        pending[-1][1].update(
                            {
                                "samples_per_s": rate,
                                "data_wait_share": data_wait / (now - t_interval),
                                "logit_scale": logit_scale_param.exp().item(),
                            }
                        )
                        log_file.flush()
                        if tracker:
                            tracker.log_metrics(pending)
                        pending, t_interval, n_interval, data_wait = [], now, 0, 0.0
                        if now - last_progress >= cfg.progress_every_s or self.step == total:
                            last_progress = now
                            log(
                                f"step {self.step}/{total} ({100 * self.step / total:.0f}%) loss {loss_value:.4f} "
                                f"lr {lr:.3g} {rate:.1f} samples/s"
                            )
                    if self.step % cfg.checkpoint_every == 0 and self.step < total:
                        log_file.flush()
                        self._save_latest()
                    # One rank's SIGTERM stops every rank on this same step (a collective each step).
                    if group.any(self._stop_signal is not None):
                        self._save_latest()
                        signum = self._stop_signal or signal.SIGTERM
                        log(f"stopped by signal {signum} at step {self.step}; checkpoint saved")
                        status = "KILLED"
                        raise SystemExit(128 + signum)
            elapsed = time.perf_counter() - t_start
            final_path = self.out / checkpoint.FINAL
            if not main:  # rank 0 writes the checkpoint and reports; the others are done
                group.barrier()
                status = "FINISHED"
                return self._result(plan, history, final_path, started_step, elapsed, data_card_sha, None)
            checkpoint.save_atomic(
                {
                    "state_dict": self.model.state_dict(),  # open_clip's layout (see checkpoint.py)
                    "model_name": cfg.model,
                    "config": cfg.to_dict(),
                    "step": self.step,
                    "samples_seen": self.samples_seen,
                    "world_size": self.world_size,
                    "global_batch": self.global_batch,
                    "final_loss": loss_value,
                },
                final_path,
            )
            group.barrier()
            # Finished: the next launch in this dir is a new training, not a resume of this one.
            (self.out / checkpoint.LATEST).unlink(missing_ok=True)
            result = self._result(plan, history, final_path, started_step, elapsed, data_card_sha, tracker)
            if tracker:
                tracker.log_metrics(
                    [(self.step, {"final_loss": result["final_loss"], "samples_per_s_avg": result["samples_per_s"]})]
                )
                if cfg.log_checkpoint_artifact:
                    tracker.log_artifact(final_path, "checkpoint")
                tracker.set_tags({"checkpoint_path": str(final_path.resolve())})
                tracker.log_artifact(self._write_json(RESULT, result))
            else:
                self._write_json(RESULT, result)
            status = "FINISHED"
            return result
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if tracker:
                if pending and status != "FINISHED":
                    with contextlib.suppress(Exception):
                        tracker.log_metrics(pending)
                tracker.finish(status)
                if status == "FINISHED":
                    tracker.forget(cfg.output_dir)

    # ---- helpers --------------------------------------------------------------------------------------
    def _load_history(self, log_path: Path, write: bool = True) -> list[dict]:
        """Rows up to where this run starts; rows a killed process wrote after its last checkpoint are dropped."""
        if not log_path.exists():
            return []
        rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        keep = [r for r in rows if self.resumed_from is not None and r["step"] <= self.resumed_from]
        if write:
            log_path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        return keep

    def _write_json(self, name: str, obj: dict) -> Path:
        path = self.out / name
        checkpoint.remove_stale_temps(path)
        tmp = path.with_name(f".{name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, path)
        return path

    def _result(self, plan, history, final_path, started_step, elapsed, data_card_sha, tracker) -> dict:
        losses = [r["loss"] for r in history]
        tail = losses[-max(1, min(self.cfg.log_every, len(losses))) :]
        stride = max(1, len(history) // 100)
        steps_here = self.step - started_step
        return {
            "snapshot": self.cfg.snapshot,
            "model": self.cfg.model,
            "t": self.cfg.t,
            "strategy": self.cfg.strategy,
            "final_loss": sum(tail) / len(tail) if tail else float("nan"),
            "last_loss": losses[-1] if losses else float("nan"),
            "first_loss": losses[0] if losses else float("nan"),
            "loss_finite": all(math.isfinite(x) for x in losses),
            "steps": self.step,
            "samples_seen": self.samples_seen,
            # summed over ranks: the global batch per step
            "samples_per_s": steps_here * self.global_batch / elapsed if elapsed > 0 and steps_here else 0.0,
            "world_size": self.world_size,
            "global_batch": self.global_batch,
            "batch_size_per_rank": self.cfg.batch_size,
            "resumed_from_step": self.resumed_from,
            "warm_start_from": self.cfg.warm_start_from if self.cfg.warm_started else None,
            "checkpoint_path": str(final_path.resolve()),
            "device": str(self.device),
            "precision": self.precision,
            "data": plan.summary(),
            "data_card_sha256": data_card_sha,
            "mlflow_run_id": tracker.run_id if tracker else None,
            "mlflow_run_url": tracker.run_url if tracker else None,
            "mlflow_experiment_id": tracker.experiment_id if tracker else None,
            "loss_curve": [[r["step"], round(r["loss"], 5)] for r in history[::stride]],
        }
