"""The curation run in MLflow (a real sqlite store): params, metrics, the data card as artifacts, the curated set as
an `mlflow.data` dataset, the record next to the card; and a training of the tiny model on that card naming the run.
"""

from __future__ import annotations

import json

import pytest

from metaclip_assets import layout
from metaclip_assets.curation import tracking
from metaclip_assets.training.config import TrainConfig
from metaclip_assets.training.loop import Trainer
from metaclip_assets.training.toy_data import make_toy_shards
from metaclip_assets.training.tracking import Tracker, read_run_record, sqlite_store_uri
from metaclip_assets_tests.curation import test_steps
from metaclip_assets_tests.curation.test_steps import BUCKETS, SHARDS, SNAPSHOT

curated = test_steps.curated  # the sample snapshot, curated once per module


@pytest.fixture(scope="module")
def logged(curated, tmp_path_factory):
    storage, *_, card = curated
    uri = sqlite_store_uri(str(tmp_path_factory.mktemp("mlflow")))
    run = tracking.log_curation_run(storage, SNAPSHOT, card, SHARDS, BUCKETS, Tracker(uri, "metaclip-test"))
    return storage, card, uri, run


@pytest.mark.slow  # the sample curation and a new MLflow store (~4 s of migrations)
def test_curation_run_has_params_metrics_artifacts_and_dataset(logged):
    from mlflow import MlflowClient

    storage, card, uri, run = logged
    client = MlflowClient(tracking_uri=uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == f"curation/{SNAPSHOT}"
    p, m = got.data.params, got.data.metrics
    assert p["metadata_sha256"] == card.card.metadata_sha256 and float(p["t"]) == 3 and p["count_mode"] == "snapshot"
    assert (p["num_shards"], p["num_buckets"], p["seed"]) == (str(SHARDS), str(BUCKETS), str(card.card.seed))
    assert m["funnel/curated_pairs"] == card.funnel["curated_pairs"] > 0
    assert m["funnel/matched_pairs"] == card.funnel["matched_pairs"] >= m["funnel/curated_pairs"]
    assert m["tail_share_after"] == pytest.approx(card.card.tail_share_after)
    assert m["entries_curated"] == card.card.entries_curated
    assert all(m[f"bad_records/{k}"] == v for k, v in card.bad_records.items())
    artifacts = {a.path for a in client.list_artifacts(run.run_id, "data_card")}
    folder = storage.list(layout.datacard_dir(SNAPSHOT, SHARDS, BUCKETS))
    expected = {f"data_card/{k.rsplit('/', 1)[1]}" for k in folder} - {f"data_card/{layout.DATACARD_MLFLOW_RUN}"}
    assert {"data_card/datacard.json", "data_card/summary.json", "data_card/datacard.md"} <= artifacts == expected

    (inp,) = got.inputs.dataset_inputs
    assert {t.key: t.value for t in inp.tags}[tracking.CONTEXT_TAG] == "curation"
    ds = inp.dataset
    assert ds.name == f"curated/{SNAPSHOT}" and ds.source_type == "local"
    balanced = storage.path(layout.curation_dir("balanced", SNAPSHOT, SHARDS, BUCKETS))
    assert json.loads(ds.source)["uri"] == f"file://{balanced}"
    columns = {c["name"]: c["type"] for c in json.loads(ds.schema)["mlflow_colspec"]}
    assert columns["pair_id"] == "long" and columns["entry_ids"] == "array"
    assert ds.digest == run.data_card_sha256[: tracking.DIGEST_CHARS]

    record = storage.read_json(layout.datacard_key(SNAPSHOT, SHARDS, BUCKETS, layout.DATACARD_MLFLOW_RUN))
    assert record["run_id"] == run.run_id and record["tracking_uri"] == uri and record["url"].endswith(run.run_id)
    print(f"curation run logged in {run.seconds} s")


@pytest.mark.slow
def test_training_run_names_the_curation_run(logged, tmp_path):
    from mlflow import MlflowClient

    storage, _, uri, run = logged
    make_toy_shards(tmp_path / "shards" / "S1", n_shards=1, per_shard=64, seed=1, colours=("red", "blue"))
    cfg = TrainConfig(
        snapshot="S1",
        output_dir=str(tmp_path / "run"),
        shard_root=str(tmp_path / "shards"),
        data_root=str(tmp_path),
        tracking_uri=uri,
        experiment="metaclip-test",
        batch_size=32,
        samples_budget=64,
        threads=1,
        shuffle_buffer=64,
        progress_every_s=1e9,
        data_card_paths=[storage.path(layout.datacard_key(SNAPSHOT, SHARDS, BUCKETS, n)) for n in tracking.CARD_HASHED],
    )
    result = Trainer(cfg, log=lambda m: None).run()
    client = MlflowClient(tracking_uri=uri)
    trained = client.get_run(result["mlflow_run_id"])
    assert trained.data.tags["curation_run_id"] == run.run_id and trained.data.tags["curation_run_url"] == run.url
    # the training hashes the same card files into the same digest: the two runs name one dataset
    assert trained.data.params["data_card_sha256"] == run.data_card_sha256
    (inp,) = trained.inputs.dataset_inputs
    assert {t.key: t.value for t in inp.tags}[tracking.CONTEXT_TAG] == "training"
    curation_ds = client.get_run(run.run_id).inputs.dataset_inputs[0].dataset
    assert (inp.dataset.name, inp.dataset.digest, inp.dataset.source) == (
        curation_ds.name,
        curation_ds.digest,
        curation_ds.source,
    )


@pytest.mark.slow
def test_record_of_another_card_version_is_not_used(logged, tmp_path):
    storage, *_ = logged
    paths = [storage.path(layout.datacard_key(SNAPSHOT, SHARDS, BUCKETS, n)) for n in tracking.CARD_HASHED]
    record = read_run_record(paths, logged[3].data_card_sha256)
    assert record is not None and record["run_id"] == logged[3].run_id
    assert read_run_record(paths, "0" * 64) is None  # the card changed after the run was logged
    assert read_run_record([str(tmp_path / "datacard.json")], "0" * 64) is None  # no record
    assert read_run_record([], None) is None


def test_metric_values_flatten_numbers_only():
    values = {"a": 1, "f": {"x": 2.5, "y": True, "z": "s"}, "rows": [1, 2]}
    assert tracking.metric_values(values) == {"a": 1.0, "f/x": 2.5}
