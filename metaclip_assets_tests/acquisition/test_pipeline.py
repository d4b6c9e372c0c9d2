"""acquire() end to end against a real HTTP server on 127.0.0.1: every failure kind ends in its reason code,
nothing is lost or hung, shards are deterministic, resumable, and readable by webdataset and open_clip."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from metaclip_assets.acquisition import HttpImageSource, acquire, shards
from metaclip_assets.acquisition.pipeline import prepare_rows
from metaclip_assets.crawl.pool import image_uuid
from metaclip_assets_tests.acquisition import _support as sup

SNAP = "CC-MAIN-2024-10"


@pytest.fixture
def server():
    srv = sup.ImageServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def images(request) -> list[bytes]:
    return sup.load_images(sup.optional_realdata(request), 24)


def fetcher(**kw) -> HttpImageSource:
    opts = dict(
        timeout=0.5, max_retries=1, backoff=0.02, max_backoff=0.2, max_bytes=1_000_000, allow_loopback_for_tests=True
    )
    opts.update(kw)
    return HttpImageSource(**opts)


def good_pairs(server: sup.ImageServer, images: list[bytes], n: int, tag: str = "img") -> list[tuple[str, str]]:
    """n images served as /<tag>/<i>.jpg; every third gets a second caption (several texts, one URL)."""
    pairs = []
    for i in range(n):
        url = server.image(f"/{tag}/{i}.jpg", images[i])
        pairs.append((url, f"a photo number {i}"))
        if i % 3 == 0:
            pairs.append((url, f"another caption for {i}"))
    return pairs


def shard_samples(paths: list[Path]) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for p in paths:
        with tarfile.open(p) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_every_failure_kind_gets_its_reason_and_nothing_is_lost(server, images, tmp_path):
    expected: dict[str, str] = {}
    pairs = good_pairs(server, images, 6)
    for u, _ in pairs:
        expected[u] = "ok"
    server.routes["/slow.jpg"] = sup.slow_body(images[5] * 8, step=64, pause=0.1)
    server.image("/big.jpg", b"\xff\xd8" + b"\x00" * 1_500_000)
    server.routes["/private"] = sup.redirect("http://10.0.0.1/secret.jpg")
    server.routes["/flaky.jpg"] = sup.flaky(images[7], failures=1, code=503)
    server.image("/corrupt.jpg", images[8][:200] + b"\x00garbage" * 50)
    server.image("/bomb.png", sup.png_bomb(100_000, 100_000), "image/png")
    server.image("/noai.jpg", images[9], headers={"X-Robots-Tag": "noai"})
    server.image("/page.html", b"<html/>", "text/html")
    server.image("/copy.jpg", images[1])  # same bytes as /img/1.jpg under another URL
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 99999\r\n\r\n" + images[2][:100]
    server.routes["/cut.jpg"] = sup.raw(cut)
    server.routes["/bad-redirect"] = sup.raw(
        b"HTTP/1.1 301 Moved\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n"
    )
    extra = {
        "/slow.jpg": "timeout",
        "/big.jpg": "too_large",
        "/private": "blocked_address",
        "/missing.jpg": "http_4xx",
        "/flaky.jpg": "ok",
        "/corrupt.jpg": "decode_error",
        "/bomb.png": "decompression_bomb",
        "/noai.jpg": "opt_out",
        "/page.html": "not_image",
        "/copy.jpg": "duplicate",
        "/cut.jpg": "truncated",
        "/bad-redirect": "bad_redirect",
    }
    for path, reason in extra.items():
        expected[server.url(path)] = reason
        pairs.append((server.url(path), f"caption of {path}"))
    # same bytes under two URLs: the first in key order (image_uuid) is kept, whichever URL that is
    twins = sorted([server.url("/img/1.jpg"), server.url("/copy.jpg")], key=image_uuid)
    expected[twins[0]], expected[twins[1]] = "ok", "duplicate"
    expected["file:///etc/passwd"] = "bad_url"
    expected[f"http://u:p@127.0.0.1:{server.port}/img/0.jpg"] = "url_credentials"
    pairs += [("file:///etc/passwd", "local file"), (f"http://u:p@127.0.0.1:{server.port}/img/0.jpg", "creds")]
    rows = sup.curated_rows(pairs, SNAP)
    reports: list[tuple[dict, float]] = []

    t0 = time.monotonic()
    res = acquire(
        rows,
        fetcher(),
        tmp_path,
        snapshot=SNAP,
        shard=3,
        samples_per_shard=5,
        image_size=32,
        workers=8,
        progress=lambda c, r: reports.append((dict(c), r)),
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 8.0, elapsed  # slowest URL: two 0.5 s deadlines (+ load slack); the drip lasts 16 s or more

    index, failures = pl.read_parquet(res.index_path), pl.read_parquet(res.failures_path)
    # nothing lost: every input pair is in exactly one of the two tables
    assert sorted(index["pair_id"].to_list() + failures["pair_id"].to_list()) == sorted(rows["pair_id"].to_list())
    got = dict(zip(index["url"], index["reason_code"])) | dict(zip(failures["url"], failures["reason_code"]))
    assert got == expected
    assert res.counts == dict(pl.concat([index, failures])["reason_code"].value_counts().iter_rows())
    assert res.rows == rows.height and res.ok == index.height and 0 < res.success_rate < 1
    assert failures.filter(pl.col("reason_code") == "duplicate")["duplicate_of"].to_list() == [image_uuid(twins[0])]
    assert failures.filter(pl.col("url") == server.url("/missing.jpg"))["status"].to_list() == [404]
    assert server.hits["/flaky.jpg"] == 2 and server.hits["/missing.jpg"] == 1 and server.hits["/img/0.jpg"] == 1

    # the shards hold exactly the index rows, each sample complete and consistent with its metadata
    assert [p.name for p in res.shards] == sorted(p.name for p in tmp_path.glob("*.tar"))
    assert all(p.name.startswith(f"{SNAP}-003-") for p in res.shards)
    samples = shard_samples(res.shards)
    assert sorted(samples) == sorted(index["key"].to_list())
    by_key = {r["key"]: r for r in index.iter_rows(named=True)}
    for key, s in samples.items():
        assert set(s) == {"jpg", "txt", "json"}
        meta = json.loads(s["json"])
        row = by_key[key]
        assert s["txt"].decode() == row["text"] and meta["url"] == row["url"] and meta["pair_id"] == row["pair_id"]
        assert meta["entry_ids"] == row["entry_ids"] and meta["snapshot"] == SNAP
        assert Image.open(io.BytesIO(s["jpg"])).size == (32, 32)
        path = row["url"].split(str(server.port), 1)[1]
        source = {"/flaky.jpg": images[7], "/copy.jpg": images[1]}.get(path) or images[int(path[5:-4])]
        assert meta["sha256"] == hashlib.sha256(source).hexdigest()
    # progress came per shard, with counts so far and a rate
    assert len(reports) >= len(res.shards) and sum(reports[-1][0].values()) == rows.height and reports[-1][1] > 0
    assert res.as_metadata()["reasons"] == dict(sorted(res.counts.items()))


def test_keys_and_shard_names_are_safe_and_images_never_split(server, images, tmp_path):
    rows = sup.curated_rows(good_pairs(server, images, 10), "weird/snap shot:..")
    res = acquire(rows, fetcher(), tmp_path, snapshot="weird/snap shot:..", samples_per_shard=4, image_size=16)
    names = [p.name for p in res.shards]
    assert names == [f"weird_snap_shot-000-{i:05d}.tar" for i in range(len(names))]
    index = pl.read_parquet(res.index_path)
    assert index["key"].str.contains(r"^[0-9a-f]{24}_\d{3}$").all()
    assert index.group_by("image_uuid").agg(pl.col("tar").n_unique())["tar"].max() == 1  # one image, one shard
    assert index.group_by("tar").len()["len"].max() <= 4


def test_rerun_is_identical_and_refetches_nothing(server, images, tmp_path):
    rows = sup.curated_rows(good_pairs(server, images, 12), SNAP)
    a = acquire(rows, fetcher(), tmp_path / "a", snapshot=SNAP, samples_per_shard=5, image_size=16)
    hits = sum(server.hits.values())
    again = acquire(
        rows.sample(fraction=1.0, shuffle=True, seed=1),
        fetcher(),
        tmp_path / "a",
        snapshot=SNAP,
        samples_per_shard=5,
        image_size=16,
    )
    assert sum(server.hits.values()) == hits and again.shards_skipped == len(a.shards) and again.shards_written == 0
    fresh = acquire(rows.reverse(), fetcher(), tmp_path / "b", snapshot=SNAP, samples_per_shard=5, image_size=16)
    assert [p.read_bytes() for p in a.shards] == [p.read_bytes() for p in fresh.shards]  # input order is irrelevant


def test_killed_run_resumes_without_half_shards(server, images, tmp_path, monkeypatch):
    rows = sup.curated_rows(good_pairs(server, images, 18), SNAP)
    kw = dict(snapshot=SNAP, samples_per_shard=6, image_size=16, workers=4)
    real_add = shards.ShardWriter.add
    calls = {"n": 0}

    def dying_add(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 15:  # inside the third shard: shards hold 5 or 6 samples (images are not split)
            raise KeyboardInterrupt("killed")
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(shards.ShardWriter, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        acquire(rows, fetcher(), tmp_path, **kw)
    monkeypatch.setattr(shards.ShardWriter, "add", real_add)
    done = sorted(p.name for p in tmp_path.glob("*.tar"))
    assert done == [f"{SNAP}-000-00000.tar", f"{SNAP}-000-00001.tar"]
    first_two = {n: (tmp_path / n).stat().st_mtime_ns for n in done}
    # a hard kill would also leave the temp file the writer was filling: make one, as a kill would
    stale = tmp_path / f".{SNAP}-000-00002.tar.4242-deadbeef.tmp"
    stale.write_bytes(b"half a tar")
    assert stale not in tmp_path.glob("*.tar") and stale not in tmp_path.glob(f"{SNAP}-000-0000[0-9].tar")
    done_urls = set(pl.read_parquet(tmp_path / f"{SNAP}-000-00000.samples.parquet")["url"]) | set(
        pl.read_parquet(tmp_path / f"{SNAP}-000-00001.samples.parquet")["url"]
    )
    hits_before = {u: server.hits[u.split(str(server.port), 1)[1]] for u in done_urls}

    res = acquire(rows, fetcher(), tmp_path, **kw)
    assert not stale.exists() and not list(tmp_path.glob(".*.tmp"))
    assert res.shards_skipped == 2 and res.shards_written == len(res.shards) - 2 >= 1
    assert {n: (tmp_path / n).stat().st_mtime_ns for n in done} == first_two  # complete shards untouched
    assert {u: server.hits[u.split(str(server.port), 1)[1]] for u in done_urls} == hits_before  # not refetched
    assert res.ok == rows.height
    fresh = acquire(rows, fetcher(), tmp_path / "fresh", **kw)
    assert [p.read_bytes() for p in res.shards] == [p.read_bytes() for p in fresh.shards]


def test_failed_samples_retried_only_when_asked(server, images, tmp_path):
    outage = {"on": True}
    pairs = good_pairs(server, images, 8)
    for i in range(3):
        server.routes[f"/down/{i}.jpg"] = sup.switchable(images[10 + i], outage)
        pairs.append((server.url(f"/down/{i}.jpg"), f"outage image {i}"))
    rows = sup.curated_rows(pairs, SNAP)
    kw = dict(snapshot=SNAP, samples_per_shard=4, image_size=16)
    first = acquire(rows, fetcher(max_retries=0), tmp_path, **kw)
    assert first.counts["http_5xx"] == 3 and first.transient_failures == 3
    outage["on"] = False
    hits = dict(server.hits)
    second = acquire(rows, fetcher(), tmp_path, **kw)  # not asked: nothing fetched, same result
    assert dict(server.hits) == hits and second.counts == first.counts and second.shards_written == 0
    third = acquire(rows, fetcher(), tmp_path, retry_failed=True, **kw)
    assert third.counts == {"ok": rows.height} and pl.read_parquet(third.failures_path).height == 0
    assert all(server.hits[f"/down/{i}.jpg"] == hits[f"/down/{i}.jpg"] + 1 for i in range(3))
    assert sum(server.hits[f"/img/{i}.jpg"] for i in range(8)) == 8  # kept samples were carried, not refetched
    fresh = acquire(rows, fetcher(), tmp_path / "fresh", **kw)
    assert [p.read_bytes() for p in third.shards] == [p.read_bytes() for p in fresh.shards]


def test_changed_settings_rebuild_and_stale_shards_removed(server, images, tmp_path):
    rows = sup.curated_rows(good_pairs(server, images, 9), SNAP)
    a = acquire(rows, fetcher(), tmp_path, snapshot=SNAP, samples_per_shard=3, image_size=16)
    b = acquire(rows, fetcher(), tmp_path, snapshot=SNAP, samples_per_shard=6, image_size=24)
    assert b.shards_skipped == 0 and len(b.shards) < len(a.shards)
    assert sorted(tmp_path.glob("*.tar")) == sorted(b.shards)  # no leftover of the 3-per-shard layout
    assert {Image.open(io.BytesIO(s["jpg"])).size for s in shard_samples(b.shards).values()} == {(24, 24)}


def test_prepare_rows_requires_the_contract_columns():
    with pytest.raises(ValueError, match="required"):
        prepare_rows(pl.DataFrame({"url": ["http://x/a.jpg"]}), SNAP)
    bad = sup.curated_rows([("http://example.org/a.jpg", "t")]).with_columns(pl.lit("../../etc").alias("image_uuid"))
    with pytest.raises(ValueError, match="image_uuid"):
        prepare_rows(bad, SNAP)


@pytest.mark.slow  # importing torch + open_clip takes 6-15 s on the 2-core box; the work itself well under 1 s
def test_shards_load_with_webdataset_and_open_clip(server, images, tmp_path):
    wds = pytest.importorskip("webdataset")
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    data = pytest.importorskip("open_clip_train.data")
    torch.set_num_threads(1)
    rows = sup.curated_rows(good_pairs(server, images, 12), SNAP)
    res = acquire(rows, fetcher(), tmp_path / "shards", snapshot=SNAP, samples_per_shard=5, image_size=32)
    urls = [str(p) for p in res.shards]

    plain = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "txt"))
    assert len(plain) == res.ok and all(img.size == (32, 32) and isinstance(t, str) for img, t in plain)
    assert sorted(t for _, t in plain) == sorted(rows["text"].to_list())

    # a tiny open_clip model from a local config: nothing downloaded
    cfg_dir = tmp_path / "model_configs"
    cfg_dir.mkdir()
    (cfg_dir / "tiny-acq.json").write_text(
        json.dumps(
            {
                "embed_dim": 64,
                "quick_gelu": True,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
                "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
            }
        )
    )
    open_clip.add_model_config(cfg_dir)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms("tiny-acq", pretrained=None)
    tokenizer = open_clip.get_tokenizer("tiny-acq")

    # open_clip's own loader (open_clip_train.data.get_wds_dataset), as `--val-data` / `--train-data` use it
    import argparse

    args = argparse.Namespace(
        train_data="::".join(urls),
        val_data="::".join(urls),
        train_num_samples=res.ok,
        val_num_samples=res.ok,
        dataset_resampled=False,
        train_data_upsampling_factors=None,
        seed=0,
        workers=0,
        world_size=1,
        batch_size=4,
    )
    val = data.get_wds_dataset(args, preprocess_val, is_train=False, tokenizer=tokenizer)
    batches = list(val.dataloader)
    assert sum(len(b[0]) for b in batches) == res.ok
    # The training path as released: our webdataset pin (0.2.86, open_clip_torch[training]'s) needs no patch (#935).
    train = data.get_wds_dataset(args, preprocess_train, is_train=True, epoch=0, tokenizer=tokenizer)
    images_t, tokens = next(iter(train.dataloader))
    for imgs, toks in (batches[0], (images_t, tokens)):
        assert tuple(imgs.shape) == (4, 3, 32, 32) and imgs.dtype == torch.float32
        assert tuple(toks.shape) == (4, 32) and toks.dtype == torch.long and (toks[:, 0] == 49406).all()  # <sot>
    with torch.no_grad():
        feats = model(images_t, tokens)
    assert torch.isfinite(open_clip.ClipLoss()(*feats[:3]))
