"""The README main job's path, in process: sample -> curation -> shards -> tiny CLIP training -> evaluation ->
export, and what leaves the project from it.

Asserts what the issues promise of it: the loss goes down on the sample's own curated shards, the trained model
beats chance on the sample's held-out split, the `exported_model` folders load in open_clip and transformers with the
lines its metadata shows, and open_clip's own trainer (open_clip_train) trains on the same shards in this environment.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaclip_assets.definitions import pipeline_assets
from metaclip_assets.defs.acquisition_assets import ImageSourceResource
from metaclip_assets.defs.training_assets import TrainingLauncher
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets_tests import conftest as helpers

SNAPSHOT = "SAMPLE-2024-10"
ASSETS = pipeline_assets  # crawl_files (the download) is not needed: the sample is generated in place
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample curated, shards written and a tiny model trained on them: (data root, instance, resources, run)."""
    root = tmp_path_factory.mktemp("e2e")
    os.environ["OMP_NUM_THREADS"] = "1"
    make_sample_snapshot(root, SNAPSHOT, seed=0, n_wat_files=4, pages_per_file=60)
    resources = helpers.storage_resources(
        root, image_source=ImageSourceResource(kind="warc"), training_launcher=TrainingLauncher(mode="local")
    )
    with helpers.snapshot_instance(SNAPSHOT) as instance:
        kwargs = {"instance": instance, "resources": resources}
        helpers.curate(
            ASSETS,
            SNAPSHOT,
            metadata_config=helpers.WORDNET_ONLY,
            snapshot_selection=["entry_counts", "balanced_subset"],
            snapshot_config={"ops": {"balanced_subset": {"config": {"t": 30}}}},
            **kwargs,
        )
        shards_config = {"ops": {"webdataset_shards": {"config": {"image_size": 64}}}}
        helpers.materialize_shards(ASSETS, ["webdataset_shards"], SNAPSHOT, shards_config, **kwargs)
        trained = helpers.materialize(
            ASSETS,
            ["clip_checkpoint"],
            SNAPSHOT,
            {"ops": {"clip_checkpoint": {"config": {"samples_budget": 4800, "threads": 1}}}},
            **kwargs,
        )
        yield root, kwargs, trained


def test_sample_trains_with_falling_loss_and_beats_chance(sample):
    _, kwargs, trained = sample
    md = helpers.asset_metadata(trained, "clip_checkpoint")
    curve = [loss for _, loss in md["loss_curve"]]  # [step, loss] pairs
    head, tail = curve[: max(1, len(curve) // 5)], curve[-max(1, len(curve) // 5) :]
    assert sum(tail) / len(tail) < sum(head) / len(head) - 0.5, curve
    assert md["final_loss"] < md["first_loss"]
    assert {e.check_name: e.passed for e in trained.get_asset_check_evaluations()} == {"loss_finite": True}

    evaluated = helpers.materialize(ASSETS, ["eval_metrics"], SNAPSHOT, **kwargs)
    em = helpers.asset_metadata(evaluated, "eval_metrics")
    top1 = em["heldout/top1"]
    assert top1 > 0.1 + 0.1, f"top-1 {top1} is not clearly above chance (0.10) on the held-out split"
    assert all(e.passed for e in evaluated.get_asset_check_evaluations())


def run_python(code: str, timeout: int = 300) -> str:
    """A fresh interpreter, as a user elsewhere has it: offline, nothing of ours imported unless the code does."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_exported_model_loads_with_the_lines_its_metadata_shows(sample):
    root, kwargs, _ = sample
    exported = helpers.materialize(ASSETS, ["exported_model"], SNAPSHOT, **kwargs)
    md = helpers.asset_metadata(exported, "exported_model")
    from PIL import Image

    image = Path(root) / "probe.png"
    Image.new("RGB", (80, 64), (200, 30, 40)).save(image)  # (80-32*80/64) even: no crop-offset rounding gap
    open_clip_lines = md["open_clip_load"].removeprefix("```python\n").removesuffix("\n```")
    hf_lines = md["hf_load"].removeprefix("```python\n").removesuffix("\n```")
    out = run_python(
        open_clip_lines.replace("model, _,", "oc_model, _,")
        + "\n"
        + hf_lines
        + "\nimport sys, torch\nfrom PIL import Image\n"
        "assert 'metaclip_assets' not in sys.modules\n"
        f"img = Image.open({str(image)!r}).convert('RGB')\n"
        "texts = ['a red circle', 'a photo of a dog', 'blue sky']\n"
        "with torch.no_grad():\n"
        "    a = oc_model.eval().encode_image(preprocess(img).unsqueeze(0))\n"
        "    b = model.get_image_features(**processor(images=img, return_tensors='pt'))\n"
        "    c = oc_model.encode_text(tokenizer(texts))\n"
        "    d = model.get_text_features(**processor(text=texts, return_tensors='pt', padding=True))\n"
        "b = getattr(b, 'pooler_output', b)\nd = getattr(d, 'pooler_output', d)\n"
        "print((a - b).abs().max().item(), (c - d).abs().max().item())\n"
    )
    image_diff, text_diff = map(float, out.split()[-2:])
    assert image_diff < 1e-4 and text_diff < 1e-4, out
    assert md["open_clip_folder"].endswith("open_clip") and md["hf_folder"].endswith("hf")


def test_open_clip_train_trains_on_the_sample_shards(sample, tmp_path):
    """open_clip's own trainer, run as the README shows, on our shards: no shard skipped, finite loss."""
    root, kwargs, _ = sample
    helpers.materialize(
        ASSETS,
        ["exported_model"],
        SNAPSHOT,
        {"ops": {"exported_model": {"config": {"formats": ["open_clip"]}}}},
        **kwargs,
    )
    shards = sorted((Path(root) / "shards" / SNAPSHOT).glob("*.tar"))
    assert len(shards) >= 2
    exported = next((Path(root) / "exports").glob(f"*/*/{SNAPSHOT}/open_clip"))
    cmd = [
        sys.executable, "-m", "open_clip_train.main",
        "--model", f"local-dir:{exported}",  # fine-tune our model; an architecture name trains from scratch
        "--train-data", "::".join(map(str, shards)),
        "--dataset-type", "webdataset",
        "--train-num-samples", "64",
        "--batch-size", "16",
        "--epochs", "1",
        "--lr", "1e-4",
        "--warmup", "1",
        "--precision", "fp32",
        "--device", "cpu",
        "--workers", "0",
        "--logs", str(tmp_path / "logs"),
        "--name", "sample",
        "--log-every-n-steps", "1",
        "--report-to", "",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Handling webdataset error" not in log, log[-3000:]
    losses = [
        float(line.split("Contrastive_loss: ")[1].split()[0]) for line in log.splitlines() if "Contrastive_loss" in line
    ]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses), log[-3000:]
    assert (tmp_path / "logs" / "sample" / "checkpoints" / "epoch_1.pt").exists()
