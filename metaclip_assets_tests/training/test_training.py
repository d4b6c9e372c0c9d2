"""Training: recipe defaults, the tiny model learning on toy shards, continual warm start and replay, MLflow (sqlite).

One tiny training of snapshot S1 (module fixture) is shared by the loss, tracking and continual tests.
"""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds

from metaclip_assets.training import checkpoint, data, models
from metaclip_assets.training.config import TrainConfig, lr_at
from metaclip_assets.training.loop import Trainer
from metaclip_assets.training.toy_data import make_toy_shards

S1_COLOURS = ("red", "green", "blue", "yellow")
S2_COLOURS = ("purple", "orange", "white", "black")
STEPS_S1 = 40


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_toy_shards(root / "shards" / "S1", n_shards=2, per_shard=96, seed=1, colours=S1_COLOURS)
    make_toy_shards(root / "shards" / "S2", n_shards=2, per_shard=96, seed=2, colours=S2_COLOURS)
    card = root / "datacard" / "S1"
    card.mkdir(parents=True)
    (card / "datacard.json").write_text(json.dumps({"red": 10, "circle": 4}))
    return root


def config(root: Path, snapshot: str, **kw) -> TrainConfig:
    base = dict(
        snapshot=snapshot,
        output_dir=str(root / "runs" / snapshot),
        shard_root=str(root / "shards"),
        data_root=str(root),
        batch_size=32,
        samples_budget=32 * STEPS_S1,
        lr=1e-3,
        threads=1,
        log_every=10,
        checkpoint_every=1000,
        shuffle_buffer=200,
        progress_every_s=1e9,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def s1(root) -> tuple[TrainConfig, dict]:
    cfg = config(root, "S1", data_card_paths=[str(root / "datacard" / "S1" / "datacard.json")])
    return cfg, Trainer(cfg, log=lambda m: None).run()


# ---- recipe -----------------------------------------------------------------------------------------------
def test_recipe_defaults_are_openai_clip():
    cfg = TrainConfig(
        snapshot="s", output_dir="/tmp/x", model="ViT-B-32-quickgelu", samples_budget=32_768 * 30_000, batch_size=32_768
    )
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.98, 1e-6, 0.2)
    assert cfg.base_lr == 5e-4 and cfg.effective_warmup == 2000 and cfg.precision == "auto"
    assert TrainConfig(snapshot="s", output_dir="/x", model="ViT-L-14-quickgelu").base_lr == 4e-4
    # warm-started (TiC-CLIP): no warmup whatever warmup_steps says
    assert TrainConfig(snapshot="s", output_dir="/x", warm_start_from="/p.pt", warmup_steps=50).effective_warmup == 0
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"snapshot": "s", "output_dir": "/x", "learning_rate": 1.0})


def test_cosine_schedule_with_linear_warmup():
    lrs = [lr_at(s, 1.0, 10, 110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.001


def test_no_weight_decay_on_gains_biases_norms_logit_scale():
    model, _, _ = models.build("tiny-clip", torch.device("cpu"))
    no_decay, decay = models.param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.2
    assert "logit_scale" in no_decay_names and any(".ln_" in n or "ln_final" in n for n in no_decay_names)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(no_decay["params"]) + len(decay["params"]) == len(list(model.parameters()))


# ---- the tiny model learns ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_model_loss_goes_down(s1):
    cfg, result = s1
    losses = [json.loads(line)["loss"] for line in (Path(cfg.output_dir) / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == STEPS_S1 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"tiny-clip S1: loss first10 {first:.3f} -> last10 {last:.3f}; curve {result['loss_curve'][::10]}")
    # chance level for a batch of 32 is ln(32) = 3.47; colour+shape words must be matched to pixels to go lower
    assert first > 3.0 and last < first - 1.0 and last < 2.5
    assert result["samples_seen"] == 32 * STEPS_S1 and result["steps"] == STEPS_S1
    assert result["loss_finite"] and result["resumed_from_step"] is None
    final = checkpoint.load(result["checkpoint_path"])
    assert final["step"] == STEPS_S1 and final["model_name"] == "tiny-clip"
    assert not (Path(cfg.output_dir) / checkpoint.LATEST).exists()  # finished: the next launch starts over


@pytest.mark.slow
def test_mlflow_sqlite_run(s1, root):
    from mlflow import MlflowClient

    cfg, result = s1
    assert cfg.resolve_tracking_uri() == f"sqlite:///{root}/mlflow/mlflow.db"
    client = MlflowClient(tracking_uri=cfg.resolve_tracking_uri())
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["snapshot"] == "S1"
    p = run.data.params
    assert p["model"] == "tiny-clip" and p["t"] == "0" and p["shards_current"] == "2" and p["code_version"]
    assert len(p["data_card_sha256"]) == 64
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS_S1 + 1))
    assert {m.key for m in client.get_metric_history(run.info.run_id, "samples_per_s")} == {"samples_per_s"}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "data_card")
    }
    assert {"train_config.json", "result.json", "data_card/datacard.json"} <= artifacts
    assert run.data.tags["checkpoint_path"] == result["checkpoint_path"]
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith(f"file://{root}/mlflow/")


# ---- continual (TiC-CLIP) ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_second_snapshot_starts_from_first_weights(s1, root):
    cfg1, r1 = s1
    first = checkpoint.model_state(checkpoint.load(r1["checkpoint_path"]))
    cfg2 = config(
        root,
        "S2",
        earlier_snapshots=["S1"],
        warm_start_from=r1["checkpoint_path"],
        strategy="cumulative",
        samples_budget=32 * 10,
    )
    trainer = Trainer(cfg2, log=lambda m: None).prepare()
    at_step0 = trainer.model.state_dict()
    assert at_step0.keys() == first.keys() and all(torch.equal(at_step0[k], first[k]) for k in first)
    assert lr_at(0, cfg2.base_lr, cfg2.effective_warmup, cfg2.total_steps) == cfg2.base_lr  # fresh, no warmup
    scratch = (
        Trainer(
            config(
                root, "S2x", earlier_snapshots=["S1"], warm_start_from=r1["checkpoint_path"], strategy="from_scratch"
            ),
            log=lambda m: None,
        )
        .prepare()
        .model.state_dict()
    )
    assert not torch.equal(scratch["text_projection"], first["text_projection"])

    r2 = trainer.run()
    assert r2["warm_start_from"] == r1["checkpoint_path"] and r2["t"] == 1
    assert r2["data"]["replay_shards"] == 2 and r2["data"]["replay_weight"] == 0.5
    after = checkpoint.model_state(checkpoint.load(r2["checkpoint_path"]))
    assert not torch.equal(after["text_projection"], first["text_projection"])


def test_replay_mix_follows_ratio(root):
    cfg = config(root, "S2", earlier_snapshots=["S1"], strategy="cumulative", replay_ratio=0.25)
    plan = data.plan_data(cfg)
    assert len(plan.current) == 2 and len(plan.replay) == 2 and plan.replay_weight == 0.25
    it = data.batches(
        plan,
        preprocess=lambda img: torch.zeros(1),
        tokenizer=lambda texts: texts,
        batch_size=100,
        seed=0,
        shuffle_buffer=50,
    )
    texts = [t for _ in range(4) for t in next(it)[1]]
    old = sum(any(c in t for c in S1_COLOURS) for t in texts) / len(texts)
    assert 0.17 < old < 0.33  # 400 draws at p=0.25
    seq = data.plan_data(config(root, "S2", earlier_snapshots=["S1"], strategy="sequential"))
    assert seq.replay == [] and seq.replay_weight == 0.0


def test_restricted_replay_buffer(root, tmp_path):
    cfg = config(
        root,
        "S2",
        output_dir=str(tmp_path / "out"),
        earlier_snapshots=["S1"],
        strategy="restricted",
        replay_buffer_samples=50,
    )
    plan = data.plan_data(cfg)
    assert plan.buffer_samples == 50 and plan.replay_source == "buffer" and len(plan.replay) == 1
    with tarfile.open(plan.replay[0]) as tar:
        names = tar.getnames()
    assert len(names) == 150 and all(n.startswith("S1/") for n in names)  # jpg + txt + json per sample
    samples = list(wds.DataPipeline(wds.SimpleShardList(plan.replay), wds.tarfile_to_samples()))
    assert len(samples) == 50 and all(any(c in s["txt"].decode() for c in S1_COLOURS) for s in samples)
    assert data.plan_data(cfg).replay == plan.replay  # reused, not rebuilt


def test_missing_shards_and_warm_start_fail_clearly(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no training shards for snapshot S9"):
        data.plan_data(config(root, "S9"))
    cfg = config(root, "S2", output_dir=str(tmp_path / "o"), warm_start_from=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="warm start checkpoint"):
        Trainer(cfg, log=lambda m: None).prepare()


# ---- a stopped training resumes, in the same MLflow run ------------------------------------------------------
@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_resume_continues_the_run(root):
    import os
    import signal

    from mlflow import MlflowClient

    cfg = config(
        root,
        "S1-stop",
        shard_root=str(root / "shards"),
        shard_urls=data.snapshot_shards(str(root / "shards"), "S1"),
        samples_budget=32 * 12,
        log_every=1,
        progress_every_s=0,
    )

    def log(message: str) -> None:  # K8s eviction: SIGTERM arrives mid-training
        if message.startswith("step 4/"):
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit) as stopped:
        Trainer(cfg, log=log).run()
    assert stopped.value.code == 128 + signal.SIGTERM
    saved = checkpoint.load(Path(cfg.output_dir) / checkpoint.LATEST)
    assert saved["step"] == 4 and saved["samples_seen"] == 128 and saved["fingerprint"] == cfg.fingerprint()
    assert_open_clip_loads(Path(cfg.output_dir) / checkpoint.LATEST, saved["state_dict"])  # every checkpoint does
    run_id = json.loads((Path(cfg.output_dir) / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=cfg.resolve_tracking_uri())
    assert client.get_run(run_id).info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored

    result = Trainer(cfg, log=lambda m: None).run()
    assert result["resumed_from_step"] == 4 and result["steps"] == 12 and result["mlflow_run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == list(range(1, 13))
    log_rows = (Path(cfg.output_dir) / "train_log.jsonl").read_text().splitlines()
    log_steps = [json.loads(line)["step"] for line in log_rows]
    assert log_steps == list(range(1, 13))


def assert_open_clip_loads(path: Path, expected: dict) -> None:
    """The call in MetaCLIP's and TiC-CLIP's READMEs: open_clip's own loader, no help from us but the config."""
    import open_clip

    models.register_model_configs()  # tiny-clip is ours; MetaCLIP's ViTs are in open_clip's registry already
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip", pretrained=str(path))
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert preprocess is not None


def test_final_checkpoint_is_open_clip_layout(s1):
    cfg, result = s1
    state = checkpoint.load(result["checkpoint_path"])
    assert "state_dict" in state and "model" not in state and state["model_name"] == "tiny-clip"
    assert_open_clip_loads(Path(result["checkpoint_path"]), state["state_dict"])


def test_warm_start_reads_checkpoints_of_earlier_versions(root, s1, tmp_path):
    """Before open_clip's layout the weights sat under 'model'; such a file still warm-starts the next snapshot."""
    _, result = s1
    state = checkpoint.load(result["checkpoint_path"])
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": state["state_dict"], "model_name": "tiny-clip", "step": state["step"]}, legacy)
    cfg = config(
        root, "S2", earlier_snapshots=["S1"], warm_start_from=str(legacy), samples_budget=32, strategy="sequential"
    )
    trainer = Trainer(cfg, log=lambda m: None).prepare()
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], state["state_dict"][k]) for k in loaded)


def test_non_finite_loss_stops_training(root, tmp_path):
    cfg = config(
        root,
        "S1",
        output_dir=str(tmp_path / "nan"),
        lr=1e30,
        warmup_steps=0,
        samples_budget=32 * 20,
        tracking_uri="none",
    )
    with pytest.raises(FloatingPointError, match="loss is nan"):
        Trainer(cfg, log=lambda m: None).run()
    assert not (tmp_path / "nan" / checkpoint.FINAL).exists()
