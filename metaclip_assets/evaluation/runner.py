"""One evaluation of one checkpoint: the configured zero-shot and retrieval sets, the TiC-CLIP matrix, the two
checks, files on disk and MLflow. `python -m metaclip_assets.evaluation` and the `eval_metrics` asset run this.

Results per (checkpoint file, eval set) are cached as JSON keyed by the checkpoint's path, size and mtime and the
eval set's fingerprint: each snapshot's matrix re-uses every older cell, so a new snapshot costs one new row and
one new column, not a full re-evaluation of every model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch

from metaclip_assets.evaluation import datasets, metrics, model_eval, timeperiod
from metaclip_assets.evaluation.config import EvalConfig
from metaclip_assets.training.tracking import sqlite_store_uri

CACHE_VERSION = 1  # bump when metric code changes what a cached number means


def _ckpt_id(path: str) -> list:
    st = os.stat(path)
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


class Evaluator:
    def __init__(self, cfg: EvalConfig, log=print):
        self.cfg, self.log = cfg, log
        self.device = model_eval.pick_device(cfg.device)
        out = Path(cfg.output_dir) if cfg.output_dir else None
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else (out.parent / "cache" if out else None)
        self._loaded: model_eval.LoadedModel | None = None  # one model in memory at a time
        self.evaluated = self.cached = 0

    # ---- cached scoring -------------------------------------------------------------------------------------
    def model(self, path: str) -> model_eval.LoadedModel:
        if self._loaded is None or self._loaded.path != path:
            self._loaded = None  # free the previous model first (large ViTs)
            self._loaded = model_eval.load_model(path, self.device)
        return self._loaded

    def score(self, ckpt: str, ds: datasets.ZeroShotSet | datasets.RetrievalSet) -> dict[str, float]:
        kind = "zeroshot" if isinstance(ds, datasets.ZeroShotSet) else "retrieval"
        key = hashlib.sha256(json.dumps([CACHE_VERSION, kind, _ckpt_id(ckpt), datasets.fingerprint(ds)]).encode())
        cache_file = self.cache_dir / f"{key.hexdigest()[:24]}.json" if self.cache_dir else None
        if cache_file is not None and cache_file.exists():
            self.cached += 1
            return json.loads(cache_file.read_text())["metrics"]
        t0 = time.perf_counter()
        lm = self.model(ckpt)
        fn = model_eval.zero_shot if kind == "zeroshot" else model_eval.retrieval
        result = fn(lm, ds, batch_size=self.cfg.batch_size, workers=self.cfg.workers)
        self.evaluated += 1
        self.log(
            f"{kind} {ds.name} with {ckpt}: {json.dumps({k: round(v, 4) for k, v in result.items()})} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({"checkpoint": ckpt, "dataset": ds.source, "metrics": result}))
            os.replace(tmp, cache_file)
        return result

    # ---- the evaluation ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, log = self.cfg, self.log
        t0 = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if not os.path.isfile(cfg.checkpoint):
            raise FileNotFoundError(
                f"checkpoint {cfg.checkpoint} is missing: materialize clip_checkpoint for {cfg.snapshot} first"
            )
        zs_sets, skipped = [], []
        for spec in cfg.zeroshot:
            spec = dict(spec)
            optional = spec.pop("optional", False)
            if optional and not os.path.exists(spec["path"]):
                skipped.append(spec["name"])
                log(f"skipping zero-shot set {spec['name']}: {spec['path']} does not exist")
                continue
            zs_sets.append(
                datasets.zero_shot_set(
                    spec.pop("name"), spec.pop("path"), spec.pop("format", datasets.ZEROSHOT_FORMAT), **spec
                )
            )
        rt_sets = []
        for spec in cfg.retrieval:
            spec = dict(spec)
            rt_sets.append(
                datasets.retrieval_set(
                    spec.pop("name"), spec.pop("path"), spec.pop("format", datasets.RETRIEVAL_FORMAT), **spec
                )
            )
        earlier = {s: p for s, p in cfg.checkpoints.items() if s < cfg.snapshot and os.path.isfile(p)}
        previous = max(earlier) if earlier else None
        regression_set = next((d for d in zs_sets if d.name == cfg.regression_dataset), None)

        # Order: older models first, the current one last and then kept for its own sets (loaded once each).
        prev_score = None
        if previous and regression_set is not None:
            prev_score = self.score(earlier[previous], regression_set)[cfg.regression_metric]
        matrix = tic = None
        if cfg.time_matrix:
            models_ = {**earlier, cfg.snapshot: cfg.checkpoint}
            sets = {
                s: datasets.zero_shot_set(s, p)
                for s, p in cfg.eval_sets.items()
                if s <= cfg.snapshot and os.path.isdir(p)
            }
            if sets:
                matrix = timeperiod.compute_matrix(models_, sets, lambda ck, ds: self.score(ck, ds)[cfg.matrix_metric])
                matrix["metric"] = cfg.matrix_metric
                tic = timeperiod.summary(matrix, cfg.snapshot)
            else:
                log("no held-out eval sets for the time matrix")
        lm = self.model(cfg.checkpoint)
        zeroshot = {d.name: self.score(cfg.checkpoint, d) for d in zs_sets}
        retrieval = {d.name: self.score(cfg.checkpoint, d) for d in rt_sets}
        if not zeroshot and not retrieval and matrix is None:
            raise ValueError("nothing to evaluate: no zero-shot, retrieval or held-out sets were found")

        result = {
            "snapshot": cfg.snapshot,
            "checkpoint": os.path.realpath(cfg.checkpoint),
            "model": lm.name,
            "step": lm.step,
            "device": str(self.device),
            "zeroshot": zeroshot,
            "retrieval": retrieval,
            "skipped": skipped,
            "matrix": matrix,
            "tic": tic,
            "regression": self._regression(zeroshot, previous, prev_score),
            "evaluated": self.evaluated,
            "from_cache": self.cached,
        }
        result["finite"] = finite_check(result)
        result["seconds"] = round(time.perf_counter() - t0, 2)
        result["markdown"] = markdown_report(result)
        png = (
            timeperiod.heatmap_png(matrix, cfg.matrix_metric, f"{lm.name}: zero-shot {cfg.matrix_metric} (%)")
            if matrix
            else None
        )
        files = self._write(result, png)
        result.update(log_to_mlflow(cfg, result, files, lm, log))
        result["heatmap_png"] = png
        return result

    def _regression(self, zeroshot: dict, previous: str | None, prev_score: float | None) -> dict:
        cfg = self.cfg
        base = {"dataset": cfg.regression_dataset, "metric": cfg.regression_metric, "margin": cfg.regression_margin}
        if cfg.regression_dataset is None:
            return {**base, "passed": True, "status": "no regression dataset configured"}
        if cfg.regression_dataset not in zeroshot:
            return {**base, "passed": True, "status": f"skipped: {cfg.regression_dataset} was not evaluated"}
        current = zeroshot[cfg.regression_dataset][cfg.regression_metric]
        if previous is None:
            return {
                **base,
                "passed": True,
                "current": current,
                "status": "first trained snapshot: no earlier checkpoint to compare against",
            }
        drop = prev_score - current
        ok = drop <= cfg.regression_margin + 1e-9  # a drop of exactly the margin passes despite float rounding
        return {
            **base,
            "passed": bool(ok),
            "current": current,
            "previous": prev_score,
            "previous_snapshot": previous,
            "drop": drop,
            "status": f"{'within' if ok else 'exceeds'} margin",
        }

    def _write(self, result: dict, png: bytes | None) -> list[Path]:
        if not self.cfg.output_dir:
            return []
        out = Path(self.cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "metrics.json": json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2),
            "eval_config.json": json.dumps(self.cfg.to_dict(), indent=2),
            "report.md": result["markdown"],
        }
        if result["matrix"]:
            files["matrix.json"] = json.dumps(result["matrix"], indent=2)
        written = []
        for name, text in files.items():
            (out / name).write_text(text)
            written.append(out / name)
        if png:
            (out / "matrix.png").write_bytes(png)
            written.append(out / "matrix.png")
        return written


# ---- checks and report ------------------------------------------------------------------------------------------
def finite_check(result: dict) -> dict:
    """Every rate is a finite number in [0, 1], every TiC number finite, every embedding finite, no empty set."""
    problems, checked = [], 0
    for family in ("zeroshot", "retrieval"):
        for name, m in result[family].items():
            for k, v in m.items():
                checked += 1
                if not math.isfinite(v) or (metrics.is_rate(k) and not 0.0 <= v <= 1.0):
                    problems.append(f"{family}/{name}/{k}={v}")
            if m.get("nonfinite_embeddings", 0) > 0:
                problems.append(f"{family}/{name}: {int(m['nonfinite_embeddings'])} non-finite embeddings")
            if m.get("n_samples", m.get("n_images", 1)) <= 0:
                problems.append(f"{family}/{name}: empty")
    if result["matrix"]:
        for r, row in zip(result["matrix"]["rows"], result["matrix"]["values"]):
            for c, v in zip(result["matrix"]["cols"], row):
                checked += 1
                if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                    problems.append(f"matrix[{r}][{c}]={v}")
    for k, v in (result["tic"] or {}).items():
        if v is not None:
            checked += 1
            if not math.isfinite(v):
                problems.append(f"tic/{k}={v}")
    return {"passed": not problems and checked > 0, "checked": checked, "problems": problems}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def markdown_report(result: dict) -> str:
    parts = [
        f"**{result['model']}** trained up to `{result['snapshot']}` (step {result['step']}), "
        f"evaluated on {result['device']}"
    ]
    if result["zeroshot"]:
        parts += [
            "",
            "#### Zero-shot classification",
            "",
            "| set | images | classes | top-1 | top-5 | mean per-class recall | chance top-1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in result["zeroshot"].items():
            parts.append(
                f"| {name} | {int(m['n_samples'])} | {int(m['n_classes'])} | {_pct(m['top1'])} | "
                f"{_pct(m['top5'])} | {_pct(m['mean_per_class_recall'])} | {_pct(m['chance_top1'])} |"
            )
    if result["retrieval"]:
        parts += [
            "",
            "#### Retrieval",
            "",
            "| set | images | captions | I→T R@1 | I→T R@5 | I→T R@10 | T→I R@1 | T→I R@5 | T→I R@10 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in result["retrieval"].items():
            parts.append(
                f"| {name} | {int(m['n_images'])} | {int(m['n_texts'])} | "
                + " | ".join(_pct(m[f"{d}_r{k}"]) for d in ("i2t", "t2i") for k in metrics.RETRIEVAL_KS)
                + " |"
            )
    if result["matrix"]:
        tic = result["tic"]
        parts += [
            "",
            "#### Per time period (TiC-CLIP)",
            "",
            timeperiod.markdown(result["matrix"], result["snapshot"], result["matrix"]["metric"]),
            "",
            f"in-distribution {_pct(tic['in_distribution'])} · backward transfer {_pct(tic['backward_transfer'])}"
            f" · forward transfer {_pct(tic['forward_transfer'])} · forgetting {_pct(tic['forgetting'])}",
        ]
    reg = result["regression"]
    parts += [
        "",
        f"no_regression ({reg['metric']} on {reg['dataset']}, margin {reg['margin']}): "
        f"{'passed' if reg['passed'] else 'FAILED'} — {reg['status']}",
    ]
    return "\n".join(parts)


# ---- MLflow -------------------------------------------------------------------------------------------------------
def flat_metrics(result: dict) -> dict[str, float]:
    """MLflow metric keys (no '@' allowed there): eval/<set>/<metric>, eval/tic/<name>, eval/tic_row/<eval set>."""
    out = {}
    for family in ("zeroshot", "retrieval"):
        for name, m in result[family].items():
            out.update({f"eval/{name}/{k}": v for k, v in m.items()})
    if result["matrix"]:
        out.update({f"eval/tic/{k}": v for k, v in result["tic"].items() if v is not None})
        row = result["matrix"]["rows"].index(result["snapshot"])
        out.update({f"eval/tic_row/{c}": v for c, v in zip(result["matrix"]["cols"], result["matrix"]["values"][row])})
    return out


def resolve_tracking_uri(cfg: EvalConfig, train_cfg: dict | None) -> str | None:
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri == "none":
        return None
    if uri:
        return uri
    if cfg.data_root:
        return sqlite_store_uri(cfg.data_root)
    if train_cfg:  # the store the training of this checkpoint logged to
        from metaclip_assets.training.config import TrainConfig

        try:
            return TrainConfig.from_dict(train_cfg).resolve_tracking_uri()
        except (TypeError, ValueError):
            return None
    return None


def log_to_mlflow(cfg: EvalConfig, result: dict, files: list[Path], lm: model_eval.LoadedModel, log) -> dict:
    train_cfg = lm.train_config
    uri = resolve_tracking_uri(cfg, train_cfg)
    if uri is None:
        return {"mlflow_run_id": None, "mlflow_run_url": None, "mlflow_logged_to": "none", "training_run_id": None}
    from metaclip_assets.training.tracking import Tracker

    tracker = Tracker(uri, cfg.experiment or (train_cfg or {}).get("experiment") or "metaclip", cfg.mlflow_ui_url)
    client = tracker.client
    training_run = None
    if cfg.training_run_id:
        training_run = client.get_run(cfg.training_run_id)
    else:  # the training tags its run with the checkpoint it wrote
        path = result["checkpoint"].replace("'", "\\'")
        found = client.search_runs(
            [tracker.experiment_id],
            f"tags.checkpoint_path = '{path}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        training_run = found[0] if found else None
    step = int(result["step"] or 0)
    if training_run is not None and not cfg.separate_run:
        tracker.run_id, tracker.experiment_id = training_run.info.run_id, training_run.info.experiment_id
        logged_to = "training run"
    else:
        tags = {
            "kind": "eval",
            "snapshot": cfg.snapshot,
            "model": lm.name,
            "eval.checkpoint_path": result["checkpoint"],
        }  # not checkpoint_path: that tag finds training runs
        if training_run is not None:
            tags["training_run_id"] = training_run.info.run_id
            if training_run.info.experiment_id == tracker.experiment_id:  # nests it under the training run in the UI
                tags["mlflow.parentRunId"] = training_run.info.run_id
        tracker.run_id = client.create_run(
            tracker.experiment_id, run_name=f"{cfg.snapshot}/{lm.name}/eval", tags=tags
        ).info.run_id
        tracker.log_params(
            {
                "device": result["device"],
                "batch_size": cfg.batch_size,
                "zeroshot_sets": [d["name"] for d in cfg.zeroshot],
                "retrieval_sets": [d["name"] for d in cfg.retrieval],
                "regression_margin": cfg.regression_margin,
            }
        )
        logged_to = "eval run"
    status = "FAILED"
    try:
        tracker.log_metrics([(step, flat_metrics(result))])
        tracker.set_tags(
            {
                f"eval.{cfg.snapshot}.finite": result["finite"]["passed"],
                f"eval.{cfg.snapshot}.no_regression": result["regression"]["passed"],
            }
        )
        for f in files:
            tracker.log_artifact(f, f"eval/{cfg.snapshot}")
        status = "FINISHED"
    finally:
        if logged_to == "eval run":  # the training run's own status is the training's, not ours
            tracker.finish(status)
    log(f"mlflow ({logged_to}) {tracker.run_id}: {tracker.run_url}")
    return {
        "mlflow_run_id": tracker.run_id,
        "mlflow_run_url": tracker.run_url,
        "mlflow_logged_to": logged_to,
        "training_run_id": training_run.info.run_id if training_run else None,
    }
