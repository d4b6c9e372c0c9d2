"""The shared WAT/WARC writer against independent implementations: zlib's gzip wrapper, base64, orjson, warcio."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import zlib

import orjson
from warcio.archiveiterator import ArchiveIterator

from metaclip_assets.sample import warc_writer as W


def test_gzip_member_is_zlibs_gzip_and_reproducible():
    data = b"WARC/1.0\r\n" + bytes(range(256)) * 50
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    assert W.gzip_member(data) == comp.compress(data) + comp.flush()  # what bench/gen_wat.py wrote before
    assert gzip.decompress(W.gzip_member(data)) == data
    assert W.gzip_member(b"")[:10] == W.GZIP_HEADER


def test_digests_ids_json():
    for data in (b"", b"x", bytes(range(256)) * 3):
        assert W.sha1_b32(data) == "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()
        crc = zlib.crc32(data)
        assert int(W.java_crc(data)) % (1 << 32) == crc and -(2**31) <= int(W.java_crc(data)) < 2**31
    a, b = W.RecordIds("ns"), W.RecordIds("ns")
    ids = [a() for _ in range(3)]
    assert ids == [b() for _ in range(3)] and len(set(ids)) == 3 and ids[0].startswith("<urn:uuid:")
    assert W.RecordIds("other")() != ids[0]
    doc = {"url": "https://x.example/a@b", "t": 'café ☕ \n"', "n": [1, 0.5, True, None]}
    assert W.json_text(doc).encode() == orjson.dumps(doc)
    assert "\\/" not in W.json_text(doc) and "\\u" not in W.json_text(doc)


def test_records_read_back_with_warcio():
    ids = W.RecordIds("t")
    info_id = ids()
    body = b"<html><img src=/a.jpg alt=x></html>"
    block = W.http_head("HTTP/1.1 200 OK", [("Content-Type", "text/html")]).encode() + body
    members = [
        W.warcinfo_member("f.warc.gz", "2024-05-31T01:16:45Z", info_id, [("software", "tests")], wat=False),
        W.warc_member(
            W.capture_headers(
                "response",
                "https://x.example/",
                "2024-05-18T01:58:10Z",
                ids(),
                block,
                content_type="application/http; msgtype=response",
                payload=body,
                warcinfo_id=info_id,
                payload_type="text/html",
            ),
            block,
        ),
        W.wat_member("https://x.example/", "2024-05-31T01:17:49Z", ids(), ids(), W.json_text({"a": "/"}).encode()),
        W.wat_member(None, "2024-05-31T01:17:49Z", ids(), ids(), b"{}"),
    ]
    out = []
    for rec in ArchiveIterator(io.BytesIO(b"".join(members)), check_digests="raise"):
        out.append((rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI"), rec.content_stream().read()))
    assert out == [
        ("warcinfo", None, b"software: tests\r\n\r\n"),
        ("response", "https://x.example/", body),
        ("metadata", "https://x.example/", b'{"a":"/"}'),
        ("metadata", None, b"{}"),
    ]
    assert W.parse_head(block.split(b"\r\n\r\n")[0].decode()) == {"Content-Type": "text/html"}
