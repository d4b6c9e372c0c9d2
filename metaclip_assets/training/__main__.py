"""Entry point: `python -m metaclip_assets.training --config cfg.json [--set key=value ...]`.

Launched by Dagster Pipes (the `clip_checkpoint` asset, as a subprocess or a Kubernetes pod) it reads its config
from the Pipes extra `train_config`, streams progress to the run log and reports the materialization and the
`loss_finite` check back. Launched by hand it runs standalone and prints the result as JSON.

Data-parallel: `torchrun --nproc_per_node N -m metaclip_assets.training --config cfg.json` (training/distributed.py);
rank 0 does all of the above, the other ranks train silently.
"""

from __future__ import annotations

import json
import sys

from metaclip_assets.training import pipes_entry
from metaclip_assets.training.config import TrainConfig

CHECK_LOSS_FINITE = "loss_finite"  # the clip_checkpoint asset declares its check under this name


def materialization_metadata(result: dict) -> dict:
    """Typed Pipes metadata, so the UI shows a link, a path and numbers rather than strings."""
    md = {
        "final_loss": {"raw_value": result["final_loss"], "type": "float"},
        "first_loss": {"raw_value": result["first_loss"], "type": "float"},
        "samples_seen": {"raw_value": result["samples_seen"], "type": "int"},
        "steps": {"raw_value": result["steps"], "type": "int"},
        "samples_per_s": {"raw_value": round(result["samples_per_s"], 2), "type": "float"},  # summed over ranks
        "world_size": {"raw_value": result["world_size"], "type": "int"},
        "global_batch": {"raw_value": result["global_batch"], "type": "int"},
        "checkpoint_path": {"raw_value": result["checkpoint_path"], "type": "path"},
        "device": {"raw_value": result["device"], "type": "text"},
        "strategy": {"raw_value": result["strategy"], "type": "text"},
        "t": {"raw_value": result["t"], "type": "int"},
        "data": {"raw_value": result["data"], "type": "json"},
        "loss_curve": {"raw_value": result["loss_curve"], "type": "json"},
        "resumed_from_step": {
            "raw_value": result["resumed_from_step"],
            "type": "null" if result["resumed_from_step"] is None else "int",
        },
        "warm_start_from": {"raw_value": result["warm_start_from"] or "none", "type": "text"},
    }
    if result["mlflow_run_id"]:
        md["mlflow_run_id"] = {"raw_value": result["mlflow_run_id"], "type": "text"}
        md["mlflow_run_url"] = {"raw_value": result["mlflow_run_url"], "type": "url"}
    return md


def main(argv: list[str] | None = None) -> int:
    from metaclip_assets.training.loop import Trainer  # torch is imported after argument errors are reported

    def standalone(cfg: TrainConfig) -> int:
        result = Trainer(cfg, log=lambda m: print(m, flush=True)).run()
        print(json.dumps({k: v for k, v in result.items() if k != "loss_curve"}, indent=2))
        return 0

    def follower(cfg: TrainConfig) -> int:  # a rank other than 0 under torchrun: trains, says nothing
        Trainer(cfg, log=lambda m: None).run()
        return 0

    def with_pipes(pipes, cfg: TrainConfig) -> None:
        try:
            result = Trainer(cfg, log=pipes.log.info).run()
        except FloatingPointError as exc:  # report the failed check before the step fails
            pipes.report_asset_check(CHECK_LOSS_FINITE, passed=False, metadata={"error": str(exc)})
            raise
        pipes.report_asset_materialization(metadata=materialization_metadata(result))
        pipes.report_asset_check(
            CHECK_LOSS_FINITE,
            passed=result["loss_finite"],
            metadata={
                "final_loss": {"raw_value": result["final_loss"], "type": "float"},
                "steps": {"raw_value": result["steps"], "type": "int"},
            },
        )

    try:
        return pipes_entry.run(
            argv, __package__, __doc__, TrainConfig, "train_config", standalone, with_pipes, follower=follower
        )
    finally:
        if "torch.distributed" in sys.modules:
            from metaclip_assets.training import distributed

            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
