"""WARC replay: a WARC written here with warcio covers every record shape (revisits, redirects, errors,
encodings); the real UK Web Archive WARCs carry pages -> <img> -> image bytes -> shard end to end."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import polars as pl
import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator as WarcioIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from metaclip_assets.acquisition import WarcReplaySource, acquire, canonical_url
from metaclip_assets_tests.acquisition import _support as sup

JPEG, PNG = sup.made_jpeg(11), sup.made_jpeg(12)


def _response(
    w: WARCWriter,
    url: str,
    body: bytes,
    status: str = "200 OK",
    ctype: str = "image/jpeg",
    extra: list[tuple[str, str]] | None = None,
    chunked: bool = False,
) -> None:
    headers = [("Content-Type", ctype)] + (extra or [])
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 500]), body[i : i + 500]) for i in range(0, len(body), 500)
        )
        payload += b"0\r\n\r\n"
    else:
        headers.append(("Content-Length", str(len(body))))
        payload = body
    http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=http))


@pytest.fixture(scope="module")
def synthetic_warc(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("warc") / "synthetic.warc.gz"
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        _response(w, "http://img.example/a.jpg", JPEG)
        _response(w, "http://img.example/gz.jpg", gzip.compress(PNG), extra=[("Content-Encoding", "gzip")])
        _response(w, "http://img.example/chunked.jpg", JPEG, chunked=True)
        _response(w, "http://img.example/gone.jpg", b"nope", "404 Not Found", "text/html")
        _response(w, "http://img.example/moved.jpg", b"", "302 Found", "text/plain", [("Location", "/a.jpg")])
        _response(w, "http://img.example/page.html", b"<html/>", ctype="text/html; charset=utf-8")
        _response(w, "http://img.example/dup.jpg", b"not the image", "500 Internal Server Error", "text/plain")
        _response(w, "http://img.example/dup.jpg", JPEG)  # a later good capture of the same URL wins
        digest = "sha1:" + base64.b32encode(hashlib.sha1(JPEG).digest()).decode()  # as WARC writers spell it
        revisit_http = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")], protocol="HTTP/1.1")
        w.write_record(
            w.create_revisit_record(
                "http://img.example/again.jpg",
                digest,
                "http://img.example/a.jpg",
                "2024-01-01T00:00:00Z",
                http_headers=revisit_http,
            )
        )
        w.write_record(
            w.create_revisit_record(
                "http://img.example/again2.jpg",
                "sha1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
                "http://img.example/a.jpg",
                "2024-01-01T00:00:00Z",
                http_headers=revisit_http,
            )
        )
        w.write_record(
            w.create_revisit_record(
                "http://img.example/orphan.jpg",
                "sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "http://elsewhere.example/x.jpg",
                "2024-01-01T00:00:00Z",
                http_headers=revisit_http,
            )
        )
    return path


@pytest.mark.parametrize(
    "url,reason,body",
    [
        ("http://img.example/a.jpg", "ok", JPEG),
        ("http://IMG.example:80/a.jpg#frag", "ok", JPEG),  # spelled differently, same resource
        ("http://img.example/gz.jpg", "ok", PNG),  # Content-Encoding undone
        ("http://img.example/chunked.jpg", "ok", JPEG),  # Transfer-Encoding undone
        ("http://img.example/moved.jpg", "ok", JPEG),  # recorded 302 followed inside the archive
        ("http://img.example/again.jpg", "ok", JPEG),  # revisit resolved by payload digest
        ("http://img.example/again2.jpg", "ok", JPEG),  # unknown digest: resolved by WARC-Refers-To-Target-URI
        ("http://img.example/dup.jpg", "ok", JPEG),
        ("http://img.example/gone.jpg", "http_4xx", None),
        ("http://img.example/page.html", "not_image", None),
        ("http://img.example/orphan.jpg", "revisit_unresolved", None),
        ("http://img.example/never-crawled.jpg", "not_in_archive", None),
    ],
)
def test_replay_record_shapes(synthetic_warc, url, reason, body):
    r = WarcReplaySource.from_files([synthetic_warc]).fetch(url)
    assert (r.reason_code, r.body) == (reason, body)
    if reason == "http_4xx":
        assert r.status == 404


def test_replay_byte_cap_and_index_roundtrip(synthetic_warc):
    src = WarcReplaySource.from_files([synthetic_warc], max_bytes=100)
    assert src.fetch("http://img.example/a.jpg").reason_code == "too_large"
    again = WarcReplaySource.from_index(src.index_frame())
    assert again.fetch("http://img.example/again.jpg").body == JPEG and len(again) == len(src)
    assert canonical_url("HTTP://Example.org:80/a%7Eb?q=1#x") == "http://example.org/a~b?q=1"


@pytest.mark.realdata
def test_real_pages_to_images_to_shards(realdata, tmp_path):
    """Page -> <img> (the pool's own WARC reader) -> image response in the same WARCs -> shard."""
    from metaclip_assets.crawl.build import build_pool

    files = sorted((realdata / "warc-with-images-ukwa").glob("*.warc.gz"))
    pool, _ = build_pool([(p, p.name) for p in files], snapshot="UKWA")
    rows = pool.with_columns(pl.Series("entry_ids", [[i % 5] for i in range(pool.height)], dtype=pl.List(pl.UInt32)))
    source = WarcReplaySource.from_files(files)
    res = acquire(rows, source, tmp_path, snapshot="UKWA", samples_per_shard=8, image_size=32, workers=2)

    index, failures = pl.read_parquet(res.index_path), pl.read_parquet(res.failures_path)
    assert index.height + failures.height == rows.height
    assert sorted(index["pair_id"].to_list() + failures["pair_id"].to_list()) == sorted(rows["pair_id"].to_list())
    # Mona Lisa: all 7 captioned images are in the WARC; IAH: 1 of 14; the gov.uk captioned images were not crawled
    ok_by_file = dict(index.group_by("source_file").agg(pl.col("url").n_unique()).iter_rows())
    assert ok_by_file == {"wikipedia-mona-lisa.warc.gz": 7, "IAH-20080430204825-00000-blackbook-truncated.warc.gz": 1}
    assert set(failures["reason_code"]) == {"not_in_archive"}

    # independent check: the sha256 in each sample is that of the payload warcio finds for its URL
    payloads: dict[str, bytes] = {}
    for p in files:
        with open(p, "rb") as f:
            for rec in WarcioIterator(f):
                if rec.rec_type == "response" and rec.http_headers and rec.http_headers.get_statuscode() == "200":
                    uri = rec.rec_headers.get_header("WARC-Target-URI").strip("<>")
                    payloads.setdefault(canonical_url(uri), rec.content_stream().read())
    seen = 0
    for shard in res.shards:
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if not name.endswith(".json"):
                continue
            meta = json.loads(data)
            key = name[:-5]
            # (HTML says Mona_Lisa%2C_by..., wget recorded Mona_Lisa,_by...: same resource, hence canonical_url)
            assert meta["sha256"] == hashlib.sha256(payloads[canonical_url(meta["url"])]).hexdigest()
            assert Image.open(io.BytesIO(members[f"{key}.jpg"])).size == (32, 32)
            row = rows.filter(pl.col("pair_id") == meta["pair_id"]).row(0, named=True)
            assert members[f"{key}.txt"].decode() == row["text"]
            assert (meta["page_url"], meta["source_file"], meta["record_offset"]) == (
                row["page_url"],
                row["source_file"],
                row["record_offset"],
            )
            seen += 1
    assert seen == index.height == res.ok
