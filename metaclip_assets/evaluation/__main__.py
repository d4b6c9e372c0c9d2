"""Entry point: `python -m metaclip_assets.evaluation --config cfg.json [--set key=value ...]`.

Launched by Dagster Pipes (the `eval_metrics` asset, as a subprocess or a Kubernetes pod) it reads its config from
the Pipes extra `eval_config`, streams progress to the run log and reports the materialization (numbers, Markdown
report with the inline heat map, MLflow link) and the checks `metrics_finite_and_in_range` and `no_regression`.
Launched by hand it runs standalone and prints the report and the result as JSON.
"""

from __future__ import annotations

import json
import sys

from metaclip_assets.evaluation.config import EvalConfig
from metaclip_assets.training import pipes_entry

# The eval_metrics asset declares its checks under these names.
CHECK_FINITE = "metrics_finite_and_in_range"
CHECK_REGRESSION = "no_regression"
REGRESSION_SEVERITY = "WARN"  # of a failed no_regression, unless the asset sends "regression_severity"


def _f(x: float) -> dict:
    return {"raw_value": float(x), "type": "float"}


def materialization_metadata(result: dict) -> dict:
    """Typed Pipes metadata: one float per number (so the UI plots them across partitions), the report as
    Markdown with the heat map inline, and the MLflow link."""
    from metaclip_assets.evaluation import timeperiod

    md: dict = {}
    for name, m in result["zeroshot"].items():
        for k in ("top1", "top5", "mean_per_class_recall", "chance_top1"):
            md[f"{name}/{k}"] = _f(m[k])
        md[f"{name}/n_samples"] = {"raw_value": int(m["n_samples"]), "type": "int"}
    for name, m in result["retrieval"].items():
        for k, v in m.items():
            if k.startswith(("i2t_", "t2i_")):
                md[f"{name}/{k}"] = _f(v)
    for k, v in (result["tic"] or {}).items():
        if v is not None:
            md[f"tic/{k}"] = _f(v)
    report = result["markdown"]
    if result.get("heatmap_png"):
        report += f"\n\n![TiC-CLIP matrix]({timeperiod.data_uri(result['heatmap_png'])})"
    md["report"] = {"raw_value": report, "type": "md"}
    if result["matrix"]:
        md["time_matrix"] = {"raw_value": result["matrix"], "type": "json"}
    md["checkpoint_path"] = {"raw_value": result["checkpoint"], "type": "path"}
    md["model"] = {"raw_value": result["model"], "type": "text"}
    md["device"] = {"raw_value": result["device"], "type": "text"}
    md["eval_seconds"] = _f(result["seconds"])
    md["cells_evaluated"] = {"raw_value": result["evaluated"], "type": "int"}
    md["cells_from_cache"] = {"raw_value": result["from_cache"], "type": "int"}
    if result["mlflow_run_id"]:
        md["mlflow_run_id"] = {"raw_value": result["mlflow_run_id"], "type": "text"}
        md["mlflow_run_url"] = {"raw_value": result["mlflow_run_url"], "type": "url"}
        md["mlflow_logged_to"] = {"raw_value": result["mlflow_logged_to"], "type": "text"}
    return md


def check_metadata(check: dict) -> dict:
    return {
        k: (
            {"raw_value": v, "type": "float"}
            if isinstance(v, float)
            else {"raw_value": v, "type": "json"}
            if isinstance(v, list)
            else v
        )
        for k, v in check.items()
        if k != "passed" and v is not None
    }


def main(argv: list[str] | None = None) -> int:
    from metaclip_assets.evaluation.runner import Evaluator  # torch is imported after argument errors are reported

    def standalone(cfg: EvalConfig) -> int:
        result = Evaluator(cfg, log=lambda m: print(m, flush=True)).run()
        print(result["markdown"])
        print(json.dumps({k: v for k, v in result.items() if k not in ("markdown", "heatmap_png")}, indent=2))
        return 0 if result["finite"]["passed"] else 1

    def with_pipes(pipes, cfg: EvalConfig) -> None:
        result = Evaluator(cfg, log=pipes.log.info).run()
        pipes.report_asset_materialization(metadata=materialization_metadata(result))
        pipes.report_asset_check(
            CHECK_FINITE, passed=result["finite"]["passed"], metadata=check_metadata(result["finite"])
        )
        pipes.report_asset_check(
            CHECK_REGRESSION,
            passed=result["regression"]["passed"],
            severity=pipes.extras.get("regression_severity", REGRESSION_SEVERITY),
            metadata=check_metadata(result["regression"]),
        )

    return pipes_entry.run(argv, __package__, __doc__, EvalConfig, "eval_config", standalone, with_pipes)


if __name__ == "__main__":
    sys.exit(main())
