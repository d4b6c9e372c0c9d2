"""Object storage end to end, against a local S3 server (moto on 127.0.0.1, the conftest `s3_server` fixture):

- acquisition's mirror on its own: a run killed mid-way leaves only complete chunks in the bucket, a re-run resumes
  from the object listing, tars equal a local run's byte for byte, and stale objects are removed;
- the sample curated through Dagster with data_root s3://..., its crawl files uploaded there (nothing local);
- `webdataset_shards` writing its tars, index and failure table to the bucket, a re-run skipping them untouched;
- the tiny model trained a few steps from those tars, read from the bucket (with a DataLoader worker).
"""

from __future__ import annotations

import polars as pl
import pytest

from metaclip_assets import layout
from metaclip_assets.acquisition.mirror import ShardMirror
from metaclip_assets.acquisition.pipeline import acquire
from metaclip_assets.acquisition.source import FetchResult
from metaclip_assets.storage import Storage
from metaclip_assets.training import data
from metaclip_assets_tests.acquisition._support import curated_rows, made_jpeg
from metaclip_assets_tests.conftest import S3_BUCKET

pytestmark = pytest.mark.slow

SNAPSHOT = "SAMPLE-2024-10"


def _s3():
    import s3fs

    return s3fs.S3FileSystem()


def _objects(prefix: str) -> dict[str, tuple[int, str]]:
    """{name: (bytes, ETag)} of the objects directly under `prefix` (bucket-relative)."""
    fs = _s3()
    fs.invalidate_cache()
    if not fs.exists(f"{S3_BUCKET}/{prefix}"):
        return {}
    return {i["name"].rsplit("/", 1)[-1]: (i["size"], i["ETag"]) for i in fs.ls(f"{S3_BUCKET}/{prefix}", detail=True)}


def _samples(urls: list[str]) -> list[dict]:
    import webdataset as wds

    return list(wds.DataPipeline(wds.SimpleShardList(urls), data.tar_samples))


def test_which_urls_go_through_fsspec():
    for url in ("s3://b/x.tar", "gs://b/x.tar", "az://c/x.tar"):
        assert data.is_object_url(url)
    for url in ("/d/x.tar", "x.tar", "file:///d/x.tar", "pipe:aws s3 cp s3://b/x.tar -", "https://h/x.tar", "C:/x.tar"):
        assert not data.is_object_url(url)  # webdataset's own gopen, as before


# ---- the acquisition mirror, without Dagster ---------------------------------------------------------------
class _Images:
    """An image source over a dict; raises KeyboardInterrupt (a kill) for the URL named `kill`."""

    def __init__(self, bodies: dict[str, bytes], kill: str | None = None) -> None:
        self.bodies, self.kill = bodies, kill

    def fetch(self, url: str) -> FetchResult:
        if url == self.kill:
            raise KeyboardInterrupt("killed")
        return FetchResult(url, True, 200, "image/jpeg", self.bodies[url], "ok", 0.0)


def test_acquisition_mirror_resumes_from_the_bucket(s3_server, tmp_path):
    snap, storage = "MIRROR-2024-01", Storage(f"s3://{S3_BUCKET}/mirror")
    bodies = {f"https://img.example/{i}.jpg": made_jpeg(i) for i in range(18)}
    rows = curated_rows([(u, f"caption {i}") for i, u in enumerate(bodies)], snap)
    kw = dict(snapshot=snap, shard=0, samples_per_shard=6, image_size=16, workers=2)
    prefix = f"mirror/{layout.shards_dir(snap)}"  # bucket-relative
    keys = rows.sort("image_uuid")["url"].to_list()  # key order: sample keys start with the image_uuid

    def run(source, **more):
        with ShardMirror.open(storage, snap, 0) as mirror:
            return acquire(rows, source, mirror.dir, **{**kw, **more}, progress=mirror.pushing(lambda c, r: None))

    with pytest.raises(KeyboardInterrupt):
        run(_Images(bodies, kill=keys[-1]))  # the last image in key order is in the third chunk
    stem = layout.shard_prefix(snap, 0)
    done = {f"{stem}-0000{n}.{ext}" for n in (0, 1) for ext in ("tar", "samples.parquet")}
    assert set(_objects(prefix)) == done  # complete chunks only: no temp file, no half tar, no index yet
    before = _objects(prefix)

    res = run(_Images(bodies))
    assert (res.shards_skipped, res.shards_written, res.ok) == (2, 1, 18)
    after = _objects(prefix)
    assert {n: after[n] for n in done} == before  # the complete chunks were not uploaded again
    assert set(after) == done | {f"{stem}-00002.tar", f"{stem}-00002.samples.parquet"} | {
        f"{stem}.index.parquet",
        f"{stem}.failures.parquet",
    }
    fresh = acquire(rows, _Images(bodies), tmp_path / "local", **kw)
    urls = data.snapshot_shards(f"s3://{S3_BUCKET}/mirror/{layout.SHARDS_DIR}", snap)
    assert urls == [f"s3://{S3_BUCKET}/{prefix}/{p.name}" for p in fresh.shards]
    fs = _s3()
    assert [fs.cat_file(u) for u in urls] == [p.read_bytes() for p in fresh.shards]  # same bytes as a local run
    index = storage.read_parquet(layout.acquisition_index_key(snap, 0))
    assert sorted(s["__key__"] for s in _samples(urls)) == sorted(index["key"])

    res = run(_Images(bodies), samples_per_shard=9)  # another tar size: the old tars are stale
    assert len(res.shards) == 2 and res.shards_written == 2
    assert sorted(n for n in _objects(prefix) if n.endswith(".tar")) == [f"{stem}-00000.tar", f"{stem}-00001.tar"]
    assert pl.read_parquet(fs.open(f"{S3_BUCKET}/{prefix}/{stem}.index.parquet")).height == 18


# ---- the sample through Dagster on s3:// --------------------------------------------------------------------
SHARD_CONFIG = {"ops": {"webdataset_shards": {"config": {"image_size": 64, "samples_per_shard": 8}}}}


@pytest.fixture(scope="module")
def s3_sample(s3_server, tmp_path_factory):
    """The sample generated locally, uploaded as the bucket's data root, curated and acquired there through Dagster."""
    from metaclip_assets.definitions import acquisition_assets, curation_assets
    from metaclip_assets.defs.acquisition_assets import ImageSourceResource
    from metaclip_assets.sample.snapshot import make_sample_snapshot
    from metaclip_assets_tests.conftest import (
        WORDNET_ONLY,
        curate,
        materialize_shards,
        snapshot_instance,
        storage_resources,
    )

    local = tmp_path_factory.mktemp("sample")
    make_sample_snapshot(local, SNAPSHOT, seed=6, n_wat_files=3, pages_per_file=30)
    root = f"s3://{S3_BUCKET}/root"
    _s3().put(f"{local}/", f"{S3_BUCKET}/root", recursive=True)
    assets = [*curation_assets, *acquisition_assets]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tempfile.tempdir", str(tmp_path_factory.mktemp("tmp")))  # WARC copies land in the test's folder
        with snapshot_instance(SNAPSHOT) as instance:
            kwargs = {"instance": instance, "resources": storage_resources(root, image_source=ImageSourceResource())}
            curated = curate(
                assets,
                SNAPSHOT,
                metadata_config=WORDNET_ONLY,
                snapshot_selection=["entry_counts", "balanced_subset"],
                **kwargs,
            )
            shards = materialize_shards(assets, ["webdataset_shards"], SNAPSHOT, SHARD_CONFIG, **kwargs)
            before = _objects(f"root/{layout.shards_dir(SNAPSHOT)}")
            again = materialize_shards(assets, ["webdataset_shards"], SNAPSHOT, SHARD_CONFIG, **kwargs)
            from metaclip_assets_tests.conftest import materialize

            report = materialize(assets, ["acquisition_report"], SNAPSHOT, **kwargs)
            yield {
                "root": root,
                "curated": curated,
                "shards": shards,
                "again": again,
                "before": before,
                "report": report,
            }


def _metadata(result, asset: str) -> dict:
    from metaclip_assets_tests.conftest import asset_metadata

    return asset_metadata(result, asset)


def test_curation_and_acquisition_write_to_the_bucket(s3_sample):
    curated = s3_sample["curated"]
    for result in [curated["metadata"], *curated["shards"].values(), curated["snapshot"]]:
        assert all(e.passed for e in result.get_asset_check_evaluations() if e.severity.value == "ERROR")
    keys = {p.split(f"{S3_BUCKET}/root/", 1)[1].split("/", 1)[0] for p in _s3().find(f"{S3_BUCKET}/root")}
    assert {"matched", "counts", "balanced", "shards"} <= keys

    ok = 0
    for result in s3_sample["shards"].values():
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert sorted(checks) == ["nothing_lost", "shards_readable"] and all(c.passed for c in checks.values())
        md = _metadata(result, "webdataset_shards")
        assert md["path"].startswith(f"s3://{S3_BUCKET}/root/shards/") and md["shards_written"] >= 1
        ok += md["dagster/row_count"]
    urls = data.snapshot_shards(f"{s3_sample['root']}/{layout.SHARDS_DIR}", SNAPSHOT)
    assert urls and all(u.startswith(f"s3://{S3_BUCKET}/root/shards/{SNAPSHOT}/") for u in urls)
    samples = _samples(urls)
    assert len(samples) == ok > 0 and all({"jpg", "txt", "json"} <= s.keys() for s in samples)


def test_acquisition_report_reads_the_bucket(s3_sample):
    report = s3_sample["report"]
    assert all(e.passed for e in report.get_asset_check_evaluations())
    md = _metadata(report, "acquisition_report")
    assert any(isinstance(v, str) and v.startswith(f"s3://{S3_BUCKET}/root/") for v in md.values()), md


def test_rerun_skips_the_tars_in_the_bucket(s3_sample):
    for result in s3_sample["again"].values():
        md = _metadata(result, "webdataset_shards")
        assert md["shards_written"] == 0 and md["shards_skipped"] >= md["tars"]  # a chunk can fail whole: no tar
    assert _objects(f"root/{layout.shards_dir(SNAPSHOT)}") == s3_sample["before"]  # same objects, same ETags


def test_training_reads_its_shards_from_the_bucket(s3_sample, tmp_path):
    import math

    from metaclip_assets.training.config import TrainConfig
    from metaclip_assets.training.loop import Trainer

    cfg = TrainConfig(
        snapshot=SNAPSHOT,
        output_dir=str(tmp_path / "run"),
        shard_root=f"{s3_sample['root']}/{layout.SHARDS_DIR}",
        batch_size=8,
        samples_budget=8 * 3,
        lr=1e-3,
        threads=1,
        workers=1,  # the shard stream runs in a forked DataLoader worker: fsspec must work there too
        shuffle_buffer=16,
        checkpoint_every=1000,
        tracking_uri="none",
        progress_every_s=1e9,
    )
    plan = data.plan_data(cfg, log=lambda m: None)
    assert plan.current and all(u.startswith("s3://") for u in plan.current)
    result = Trainer(cfg, log=lambda m: None).run()
    assert result["steps"] == 3 and result["samples_seen"] == 24 and result["loss_finite"]
    assert math.isfinite(result["first_loss"]) and result["data"]["current_shards"] == len(plan.current)
