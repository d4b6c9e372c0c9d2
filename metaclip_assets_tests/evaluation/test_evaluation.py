"""Evaluation with real models: a tiny CLIP trained here (training package, CPU, 48 steps) on shards of the
sample's own pictures must beat chance on the sample's held-out split; the TiC-CLIP matrix, its cache, MLflow
logging, the no_regression check, and the `eval_metrics` asset launched through Dagster Pipes.

One module fixture generates two sample snapshots' eval splits and trains snapshot 1 (48 steps) and snapshot 2
(warm-started, 6 steps) where `clip_checkpoint` would have written them, with MLflow in a sqlite store.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch
import webdataset as wds

from metaclip_assets.defs.eval_assets import EvalMetricsConfig, eval_metrics, training_run_of
from metaclip_assets.defs.launcher import TrainingLauncher
from metaclip_assets.defs.training_assets import ClipTrainingConfig
from metaclip_assets.evaluation import __main__ as entry
from metaclip_assets.evaluation import model_eval
from metaclip_assets.evaluation.plan import eval_config_for
from metaclip_assets.evaluation.runner import EvalConfig, Evaluator
from metaclip_assets.sample import CLASSES, draw_image, make_sample_snapshot
from metaclip_assets.training import checkpoint, models
from metaclip_assets.training.config import TrainConfig
from metaclip_assets.training.loop import Trainer
from metaclip_assets.training.pipes_entry import config_from_args
from metaclip_assets.training.plan import train_config_for
from metaclip_assets_tests.conftest import materialize, snapshot_instance, storage_resources

torch.set_num_threads(1)
S1, S2, S3 = "SAMPLE-2024-10", "SAMPLE-2024-18", "SAMPLE-2024-22"
CAPTIONS = ("a photo of a {}.", "a {}", "{}", "the {}")  # plain web-style captions naming the class


def class_shards(out: Path, n: int, seed: int) -> None:
    """Training pairs in the acquisition stage's webdataset layout: a picture of a sample class (the sample's own
    drawing code) with a web-style caption naming it."""
    out.mkdir(parents=True, exist_ok=True)
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    with wds.TarWriter(str(out / "000000.tar")) as sink:
        for i in range(n):
            cls = CLASSES[i % len(CLASSES)]
            buf = io.BytesIO()
            draw_image(cls, rng).save(buf, format="JPEG", quality=80)
            caption = pick.choice(CAPTIONS).format(cls)
            sink.write({"__key__": f"{seed:02d}{i:06d}", "jpg": buf.getvalue(), "txt": caption})


def random_checkpoint(path: Path, seed: int = 0) -> str:
    torch.manual_seed(seed)
    model, _, _ = models.build("tiny-clip", torch.device("cpu"))
    return str(checkpoint.save_atomic({"model": model.state_dict(), "model_name": "tiny-clip", "step": 0}, path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaldata")
    for s, seed in ((S1, 1), (S2, 2)):
        make_sample_snapshot(root, s, n_wat_files=3, pages_per_file=16)  # writes eval/<s>/ (10 classes x 20)
        class_shards(root / "shards" / s, 320, seed)
    runs = {}
    for s, steps in ((S1, 48), (S2, 6)):
        cfg = train_config_for(
            ClipTrainingConfig(batch_size=32, samples_budget=32 * steps, lr=1e-3, threads=1, log_every=10).model_dump(),
            s,
            [S1, S2],
            str(root),
        )
        cfg.update(progress_every_s=1e9, tracking_uri=f"sqlite:///{root}/mlflow/mlflow.db")
        runs[s] = Trainer(TrainConfig.from_dict(cfg), log=lambda m: None).run()
    # A retrieval set in the asset's JSON-lines format, paths relative to the file: 2 held-out pictures per class,
    # the first captioned with 3 of the sample's 5 templates, the second with the other 2 (no caption repeats).
    split = root / "eval" / S1
    templates = json.loads((split / "templates.json").read_text())
    (root / "retrieval").mkdir()
    with open(root / "retrieval" / "sample.jsonl", "w") as fh:
        for cls in CLASSES:
            for p, temps in zip(sorted((split / cls).glob("*.jpg")), (templates[:3], templates[3:])):
                fh.write(
                    json.dumps(
                        {"image": os.path.relpath(p, root / "retrieval"), "captions": [t.format(cls) for t in temps]}
                    )
                    + "\n"
                )
    return {
        "root": root,
        "runs": runs,
        "ckpt": {s: r["checkpoint_path"] for s, r in runs.items()},
        "uri": f"sqlite:///{root}/mlflow/mlflow.db",
    }


def heldout(root: Path, s: str) -> dict:
    return {"name": "heldout", "path": str(root / "eval" / s)}


# ---- the trained model ----------------------------------------------------------------------------------------
def test_trained_tiny_model_beats_chance_on_sample_heldout(trained, tmp_path):
    root = trained["root"]
    sets = dict(
        zeroshot=[heldout(root, S1)], retrieval=[{"name": "pairs", "path": str(root / "retrieval" / "sample.jsonl")}]
    )
    res = Evaluator(
        EvalConfig(
            checkpoint=trained["ckpt"][S1], snapshot=S1, time_matrix=False, tracking_uri="none", threads=1, **sets
        ),
        log=lambda _: None,
    ).run()
    rnd = Evaluator(
        EvalConfig(
            checkpoint=random_checkpoint(tmp_path / "r.pt"), snapshot=S1, time_matrix=False, tracking_uri="none", **sets
        ),
        log=lambda _: None,
    ).run()
    m, r = res["zeroshot"]["heldout"], res["retrieval"]["pairs"]
    mr, rr = rnd["zeroshot"]["heldout"], rnd["retrieval"]["pairs"]
    print(
        f"tiny-clip after 48 steps, {S1} heldout: top1 {m['top1']:.3f} top5 {m['top5']:.3f} "
        f"mpcr {m['mean_per_class_recall']:.3f} (chance 0.1/0.5/0.1); random init {mr['top1']:.3f} "
        f"{mr['top5']:.3f} {mr['mean_per_class_recall']:.3f}. Retrieval (20 images, 50 captions) trained/random: "
        + " ".join(f"{k} {r[k]:.2f}/{rr[k]:.2f}" for k in r if k[:3] in ("i2t", "t2i"))
    )
    assert m["n_samples"] == 200 and m["n_classes"] == 10 and m["chance_top1"] == 0.1
    assert m["top1"] > 0.3 and m["mean_per_class_recall"] > 0.3 and m["top5"] > 0.7  # chance: 0.1, 0.1, 0.5
    assert m["top1"] > mr["top1"] + 0.15
    # Two pictures per class: a caption's own picture and its sibling are alike, so R@1 is capped near 0.5.
    assert r["n_images"] == 20 and r["n_texts"] == 50
    assert r["t2i_r5"] > 0.35 and r["i2t_r5"] > 0.35 and r["t2i_r5"] > rr["t2i_r5"]  # chance: 0.25 and ~0.25


def test_prompt_ensemble_equals_open_clip(trained):
    import open_clip

    lm = model_eval.load_model(trained["ckpt"][S1], torch.device("cpu"))
    templates = json.loads((trained["root"] / "eval" / S1 / "templates.json").read_text())
    ours = model_eval.classifier(lm, list(CLASSES), templates)
    ref = open_clip.build_zero_shot_classifier(
        lm.model, lm.tokenizer, list(CLASSES), templates, num_classes_per_batch=3
    )
    assert torch.allclose(ours, ref.T, atol=1e-5)


def test_webdataset_cls_format_gives_the_same_numbers(trained, tmp_path):
    split = trained["root"] / "eval" / S1
    names = json.loads((split / "classnames.json").read_text())
    with wds.TarWriter(str(tmp_path / "eval-000.tar")) as sink:
        for label, cls in enumerate(names):
            for p in sorted((split / cls).glob("*.jpg")):
                sink.write({"__key__": p.stem, "jpg": p.read_bytes(), "cls": str(label)})
    cfg = EvalConfig(
        checkpoint=trained["ckpt"][S1],
        snapshot=S1,
        time_matrix=False,
        tracking_uri="none",
        batch_size=48,
        zeroshot=[
            heldout(trained["root"], S1),
            {
                "name": "wds",
                "path": str(tmp_path),
                "format": "wds",
                "classnames": str(split / "classnames.json"),
                "templates": str(split / "templates.json"),
            },
        ],
    )
    zs = Evaluator(cfg, log=lambda _: None).run()["zeroshot"]
    assert zs["wds"] == pytest.approx(zs["heldout"], abs=1e-9)


# ---- TiC-CLIP matrix, cache, MLflow -----------------------------------------------------------------------------
def test_time_matrix_cache_and_mlflow_training_run(trained, tmp_path):
    from mlflow import MlflowClient

    root, ck = trained["root"], trained["ckpt"]
    cfg = EvalConfig(
        checkpoint=ck[S2],
        snapshot=S2,
        output_dir=str(tmp_path / "out" / S2),
        zeroshot=[heldout(root, S2)],
        checkpoints={S1: ck[S1], S2: ck[S2], S3: str(tmp_path / "no.pt")},
        eval_sets={s: str(root / "eval" / s) for s in (S1, S2, S3)},
        tracking_uri=trained["uri"],
        threads=1,
    )
    first = Evaluator(cfg, log=lambda _: None).run()
    m = first["matrix"]
    assert m["rows"] == [S1, S2] and m["cols"] == [S1, S2]  # S3: no checkpoint, no split, later: left out
    assert first["zeroshot"]["heldout"]["top1"] == m["values"][1][1]
    assert (first["evaluated"], first["from_cache"]) == (4, 2)  # 4 cells; prev-on-current and heldout re-used
    s1_alone = Evaluator(
        EvalConfig(
            checkpoint=ck[S1], snapshot=S1, zeroshot=[heldout(root, S1)], time_matrix=False, tracking_uri="none"
        ),
        log=lambda _: None,
    ).run()["zeroshot"]["heldout"]["top1"]
    assert m["values"][0][0] == s1_alone
    reg = first["regression"]
    assert reg["previous_snapshot"] == S1 and reg["previous"] == m["values"][0][1]
    assert reg["passed"] == (reg["previous"] - reg["current"] <= 0.05)
    assert first["tic"]["backward_transfer"] == m["values"][1][0] and first["finite"]["passed"]
    assert (tmp_path / "out" / S2 / "matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "#### Per time period (TiC-CLIP)" in first["markdown"]

    again = Evaluator(cfg, log=lambda _: None).run()
    assert (again["evaluated"], again["from_cache"]) == (0, 6) and again["matrix"] == m

    # Logged into the training run of S2, found by the checkpoint_path tag the training set.
    client = MlflowClient(tracking_uri=trained["uri"])
    assert (
        first["mlflow_logged_to"] == "training run" and first["mlflow_run_id"] == trained["runs"][S2]["mlflow_run_id"]
    )
    run = client.get_run(first["mlflow_run_id"])
    assert run.data.metrics["eval/heldout/top1"] == pytest.approx(first["zeroshot"]["heldout"]["top1"])
    assert run.data.metrics[f"eval/tic_row/{S1}"] == pytest.approx(m["values"][1][0])
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id, f"eval/{S2}")} >= {
        f"eval/{S2}/metrics.json",
        f"eval/{S2}/matrix.png",
        f"eval/{S2}/report.md",
    }

    # A separate eval run, nested under (and tagged with) the training run.
    sep = Evaluator(
        EvalConfig(**{**cfg.to_dict(), "separate_run": True, "time_matrix": False}), log=lambda _: None
    ).run()
    eval_run = client.get_run(sep["mlflow_run_id"])
    assert sep["mlflow_logged_to"] == "eval run" and eval_run.info.status == "FINISHED"
    assert eval_run.data.tags["training_run_id"] == run.info.run_id == eval_run.data.tags["mlflow.parentRunId"]
    assert eval_run.data.metrics["eval/heldout/top1"] == pytest.approx(first["zeroshot"]["heldout"]["top1"])


def test_no_regression_fails_for_a_worse_model_and_passes_first_snapshot(trained, tmp_path):
    root, ck = trained["root"], trained["ckpt"]
    worse = random_checkpoint(tmp_path / "S3" / "final.pt")  # "trained" for S3, but back at random init
    res = Evaluator(
        EvalConfig(
            checkpoint=worse,
            snapshot=S3,
            zeroshot=[heldout(root, S2)],
            time_matrix=False,
            checkpoints={S1: ck[S1], S2: ck[S2], S3: worse},
            tracking_uri="none",
        ),
        log=lambda _: None,
    ).run()
    reg = res["regression"]
    assert reg["previous_snapshot"] == S2 and not reg["passed"] and reg["drop"] > 0.15
    assert reg["status"] == "exceeds margin" and res["finite"]["passed"]
    first = Evaluator(
        EvalConfig(
            checkpoint=ck[S1],
            snapshot=S1,
            zeroshot=[heldout(root, S1)],
            time_matrix=False,
            checkpoints={S1: ck[S1], S2: ck[S2]},
            tracking_uri="none",
        ),
        log=lambda _: None,
    ).run()["regression"]
    assert first["passed"] and first["status"].startswith("first trained snapshot")


def test_standalone_entry_point(trained, capsys):
    cfg = {
        "checkpoint": trained["ckpt"][S1],
        "snapshot": S1,
        "zeroshot": [heldout(trained["root"], S1)],
        "time_matrix": False,
    }
    assert entry.main(["--config", json.dumps(cfg), "--set", "tracking_uri=none", "--set", "batch_size=100"]) == 0
    out = capsys.readouterr().out
    assert "| heldout | 200 | 10 |" in out and '"mlflow_logged_to": "none"' in out
    with pytest.raises(ValueError, match="unknown evaluation config keys"):
        config_from_args(EvalConfig, argparse.Namespace(config=json.dumps({**cfg, "tempaltes": 1}), set=None))


# ---- the asset, through Dagster Pipes -----------------------------------------------------------------------------
def test_eval_config_paths_follow_the_training_asset():
    cfg = eval_config_for(
        EvalMetricsConfig(
            zeroshot=[{"name": "inet", "path": "{data_root}/imagenet/val", "classnames": "openai_imagenet"}]
        ).model_dump(),
        S2,
        [S3, S2, S1],
        "/data/",
        training_run_id="abc",
    )
    assert cfg["checkpoint"] == f"/data/training/metaclip/tiny-clip/{S2}/final.pt"
    assert cfg["checkpoints"] == {s: f"/data/training/metaclip/tiny-clip/{s}/final.pt" for s in (S1, S2)}
    assert cfg["eval_sets"] == {S1: f"/data/eval/{S1}", S2: f"/data/eval/{S2}"}
    assert cfg["zeroshot"][0] == {"name": "heldout", "path": f"/data/eval/{S2}", "optional": True}
    assert cfg["zeroshot"][1]["path"] == "/data/imagenet/val" and cfg["device"] == "cpu"
    assert cfg["training_run_id"] == "abc" and cfg["output_dir"] == f"/data/evaluation/metaclip/tiny-clip/{S2}"
    EvalConfig.from_dict(cfg)  # every key the asset sends is an evaluation config field
    # The training run id comes from clip_checkpoint's materialization, if it wrote the checkpoint evaluated.
    with dg.instance_for_test() as instance:
        assert training_run_of(instance, S2, cfg["checkpoint"]) is None
        for path, run in (("/elsewhere/final.pt", "old"), (cfg["checkpoint"], "run-1")):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    "clip_checkpoint",
                    partition=S2,
                    metadata={"checkpoint_path": dg.MetadataValue.path(path), "mlflow_run_id": run},
                )
            )
        assert training_run_of(instance, S2, cfg["checkpoint"]) == "run-1"
        assert training_run_of(instance, S1, cfg["checkpoint"]) is None
    # k8s: the CPU default drops the GPU limit, node selector and toleration of the training pod spec
    spec = TrainingLauncher(mode="k8s").pod_spec(gpu=False, container_name="evaluator")
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert (
        TrainingLauncher(mode="k8s").pod_spec(gpu=True)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )


@pytest.mark.slow
def test_eval_metrics_asset_through_pipes(trained):
    root = trained["root"]
    env = {"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": trained["uri"]}
    with snapshot_instance(S1, S2) as instance:
        result = materialize(
            [eval_metrics],
            partition_key=S2,
            instance=instance,
            resources=storage_resources(root, training_launcher=TrainingLauncher(env=env)),
            run_config={
                "ops": {
                    "eval_metrics": {
                        "config": {
                            "threads": 1,
                            "batch_size": 100,
                            "retrieval": [{"name": "pairs", "path": "{data_root}/retrieval/sample.jsonl"}],
                        }
                    }
                }
            },
        )
    assert result.success
    md = result.asset_materializations_for_node("eval_metrics")[0].metadata
    for k in ("top1", "top5", "mean_per_class_recall"):
        assert 0.0 <= md[f"heldout/{k}"].value <= 1.0
    assert md["heldout/n_samples"].value == 200 and md["heldout/chance_top1"].value == pytest.approx(0.1)
    assert all(0.0 <= md[f"pairs/{d}_r{k}"].value <= 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10))
    report = md["report"].value
    assert "| heldout | 200 | 10 |" in report and f"| **{S2}** |" in report and "| pairs | 20 | 50 |" in report
    assert "![TiC-CLIP matrix](data:image/png;base64,iVBOR" in report
    assert md["time_matrix"].value["rows"] == [S1, S2] and md["launcher"].value == "local"
    assert md["mlflow_run_id"].value == trained["runs"][S2]["mlflow_run_id"]
    assert md["mlflow_run_url"].url.endswith(f"/runs/{md['mlflow_run_id'].value}")
    assert Path(md["output_dir"].path, "metrics.json").is_file()
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"metrics_finite_and_in_range", "no_regression"}
    assert checks["metrics_finite_and_in_range"].passed
    reg = checks["no_regression"]
    assert reg.metadata["previous_snapshot"].value == S1
    assert reg.passed == (reg.metadata["drop"].value <= reg.metadata["margin"].value)
    print(
        f"asset: heldout top1 {md['heldout/top1'].value:.3f}, matrix {md['time_matrix'].value['values']}, "
        f"no_regression drop {reg.metadata['drop'].value:+.3f}; eval {md['eval_seconds'].value:.1f} s in the process"
    )
