"""The compiled WAT row builder and pool ids (_native/wat_rows.c, ids.c) against their Python references.

_native must give exactly the rows and counts of the Python path (orjson + wat.rows_from_wat_json)
or hand the record back to it. The fuzz test below damages WAT payloads in the ways that matter to a
JSON scanner (escapes, UTF-8, duplicate and escaped keys, wrong types on the tracked path, Unicode
whitespace, odd URLs) and compares whole-file results; it also checks that both paths really ran.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import sys

import pytest

from metaclip_assets import _native
from metaclip_assets.crawl import pool, wat
from metaclip_assets.crawl.urls import UrlResolver
from metaclip_assets_tests.crawl._records import (
    PAGE,
    PAGE_LINKS,
    SNAP,
    img,
    random_links,
    warcinfo,
    wat_json,
    wat_record,
    write_members,
)


def test_ids_equal_hashlib():
    rng = random.Random(5)
    alphabet = "ab/:.é\x00漢😀 \n"
    # lengths around the BLAKE2b (128 B) and SHA-224 (64 B, 55/56 padding) block edges, then random ones
    lengths = list(range(0, 300)) + [rng.randrange(0, 3000) for _ in range(500)]
    urls = ["".join(rng.choice(alphabet) for _ in range(n)) for n in lengths]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 300))) for _ in lengths]
    urls[10:13] = ["same"] * 3  # consecutive equal URLs share one uuid computation
    urls[20:22] = [urls[5]] * 2  # and a URL seen before, not just before
    expected = [
        int.from_bytes(hashlib.blake2b(u.encode() + b"\x00" + t.encode(), digest_size=8).digest(), "little")
        for u, t in zip(urls, texts)
    ]
    assert pool.pair_ids(urls, texts).tolist() == expected  # hashlib, one copied blake2b-64 state per row
    expected_uuids = [hashlib.sha224(u.encode()).hexdigest()[:24] for u in urls]
    assert _native.image_uuids(urls) == expected_uuids  # libcrypto's sha224 in ids.c
    assert pool.image_uuids(urls) == expected_uuids  # the Python reference
    assert _native.image_uuids([]) == [] and pool.pair_ids([], []).tolist() == []
    with pytest.raises(TypeError):
        _native.image_uuids(["a", None])
    with pytest.raises(TypeError):
        _native.image_uuids(("a",))


def test_pool_frame_is_the_same_without_native(monkeypatch):
    cols = pool.PoolColumns()
    for i, (url, text) in enumerate([("a", "x"), ("a", "y"), ("b", ""), ("a", "z"), ("é漢", "😀")]):
        cols.append(url, text, text, i, "http://p/", "2024")
    compiled = cols.to_frame(snapshot="s", source_file="f", source_format="wat")
    monkeypatch.setattr(pool, "_native", None)
    assert cols.to_frame(snapshot="s", source_file="f", source_format="wat").equals(compiled)


def test_strip_is_str_strip_for_every_code_point():
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        s = f"{c}{c}x{c}y{c}"
        assert _native.strip(s) == s.strip(), hex(cp)
    assert _native.strip("\u3000 \t\u2028 a b \x85\xa0\u205f") == "a b"  # noqa: B005 - our strip(), not str's


# --------------------------------------------------------------------------------------------
# rows: compiled == Python, on damaged payloads

_INSERTS = [
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\x00",
    b"\x1f",
    b"\x7f",
    b"\x80",
    b"\xc3",
    b"\xe9",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
    b"\\u00e9",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\u0000",
    b"\\/",
    b"\\n",
    b"\\x",
    b" ",
    b"\t",
    b"null",
    b"1e5",
    b"-0",
    b"01",
    b"true",
    b"NaN",
    b"\xef\xbb\xbf",
]
_SPACES = ["\u3000", "\xa0", "\x85", "\u2028", "\u200b", "\u180e", "\x1c", "\x0b", " ", "\t", "\r\n"]
_SRCS = [
    "/a.jpg",
    "b.png",
    "//cdn.example.net/c.gif",
    "https://x.example/d.jpg?q=1",
    "../../e.jpg",
    "./f.jpg",
    "DATA:image/png;base64,AA",
    "data:",
    "http://[::1/x",
    "javascript:x",
    "/a/./b.jpg",
    "a//b.jpg",
    "?x",
    "https://x.example:80/p;q",
    "https://bü.example/i.jpg",
    "/é.jpg",
    "\\\\x.jpg",
    "#f",
    "",
    "   ",
]
_TRACKED = [
    b'"Envelope"',
    b'"Payload-Metadata"',
    b'"HTTP-Response-Metadata"',
    b'"HTML-Metadata"',
    b'"Head"',
    b'"Links"',
    b'"WARC-Header-Metadata"',
    b'"WARC-Target-URI"',
    b'"WARC-Date"',
    b'"path"',
    b'"url"',
    b'"alt"',
    b'"title"',
    b'"data-image-title"',
]


def _links(rng: random.Random) -> list[dict]:
    links = random_links(rng, rng.randint(1, 8))
    for link in links:
        if rng.random() < 0.3:
            link["url"] = rng.choice(_SPACES) + rng.choice(_SRCS) + rng.choice(_SPACES)
        if rng.random() < 0.3:
            link[rng.choice(["alt", "title", "data-image-title"])] = (
                rng.choice(_SPACES) + rng.choice(["dog", "", "a\rb", "東京"]) + rng.choice(_SPACES)
            )
    return links


def _damage(rng: random.Random, payload: bytes) -> bytes:
    """One or two random edits of the kinds a JSON scanner gets wrong."""
    for _ in range(rng.randint(1, 2)):
        kind = rng.randrange(9)
        pos = rng.randrange(len(payload) + 1)
        if kind == 0:  # insert a troublesome token anywhere
            payload = payload[:pos] + rng.choice(_INSERTS) + payload[pos:]
        elif kind == 1:  # cut a span
            payload = payload[:pos] + payload[pos + rng.randint(1, 30) :]
        elif kind == 2:  # repeat a tracked key (JSON keeps the last one)
            key = rng.choice(_TRACKED)
            i = payload.find(key)
            if i >= 0:
                payload = payload[:i] + key + b':"dup",' + payload[i:]
        elif kind == 3:  # spell a tracked key with an escape
            key = rng.choice(_TRACKED)
            payload = payload.replace(key, key[:2] + b"\\u%04x" % key[2] + key[3:], 1)
        elif kind == 4:  # wrong type for a tracked value
            key = rng.choice(_TRACKED)
            i = payload.find(key + b":")
            if i >= 0:
                i += len(key) + 1
                payload = (
                    payload[:i] + rng.choice([b"5,", b"null,", b'"",', b"[],", b"{},", b'["IMG@/src"],']) + payload[i:]
                )
                # the old value now follows a comma: turn it into an extra key's value
                payload = payload.replace(b",", b',"zz":', 1) if rng.random() < 0.5 else payload
        elif kind == 5:  # a byte flip
            if payload:
                i = rng.randrange(len(payload))
                payload = payload[:i] + bytes([payload[i] ^ (1 << rng.randrange(8))]) + payload[i + 1 :]
        elif kind == 6:  # deep nesting in an untracked field
            depth = rng.choice([10, 255, 256, 257, 600])
            payload = payload.replace(b'"Container":', b'"Container":' + b"[" * depth + b"]" * depth + b',"c0":', 1)
        elif kind == 7:  # trailing garbage or whitespace
            payload = payload + rng.choice([b" ", b"\r\n", b"x", b"{}", b"\x00"])
        else:  # a number past orjson's double range or int()'s 4,300-digit limit, in an untracked field
            digits = rng.choice([b"1" * 5001, b"-" + b"9" * 5001, b"3" * 400, b"1e99999", b"2" * 4300])
            payload = payload.replace(b'"Container":', b'"Container":' + digits + b',"c1":', 1)
    return payload


def test_compiled_rows_equal_python_rows_on_damaged_payloads(tmp_path, monkeypatch):
    rng = random.Random(11)
    members = [warcinfo()]
    for i in range(2500):
        uri = rng.choice(
            [
                f"https://h{i % 5}.example/d/p{i}.html",
                "https://h.example",
                "http://[::1]/x/",
                "<http://w.example/a/>",
                "https://h.example:8080/a/b/c.html?q=1#f",
                "http://h.example/a//b/",
                "https://h.example/./x",
                "https://u@h.example/p/",
                "https://bü.example/p",
                "http://h.example;p/x",
                "HTTP://H.example/x",
                "https://h.example/π/ü.html",
                "https://:80/x",
                " https://h.example/x",
                "https://h.example?q",
            ]
        )
        base = rng.choice([None, None, "/b/", "https://base.example/x/", " //cdn.example/ "])
        links = PAGE_LINKS if i % 50 == 0 else _links(rng)
        payload = wat_json(uri, links, base=base, date=rng.choice(["2024-05-18T01:58:10Z", ""]))
        if rng.random() < 0.7:
            payload = _damage(rng, payload)
        members.append(wat_record(rng.choice([uri, ""]), payload))
    path = tmp_path / "fuzz.warc.wat.gz"
    offsets = write_members(path, members)

    calls = {"orjson": 0}
    real = wat.orjson

    class CountingOrjson:  # in compiled mode orjson only runs for the payloads _native hands back
        JSONDecodeError = real.JSONDecodeError

        @staticmethod
        def loads(data):
            calls["orjson"] += 1
            return real.loads(data)

    fast, fst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=False)
    monkeypatch.setattr(wat, "orjson", CountingOrjson)
    comp, cst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=True)
    assert comp.equals(fast)
    assert cst.as_dict() == fst.as_dict()
    # both paths ran on a good share of the records, and the records made rows and skips of every kind
    with_images = sum(1 for m in members[1:] if wat.IMG_MARK in gzip.decompress(m))
    assert 300 < calls["orjson"] < with_images - 800, (calls, with_images)
    assert comp.height > 3000
    # issue 16: records with a 5,001-digit integer read as rows on both paths (they were bad_json in Python only)
    huge = {off for off, m in zip(offsets, members) if b"1" * 5001 in gzip.decompress(m)}
    assert len(huge) > 20 and len(huge & set(comp["record_offset"])) > 10, len(huge)
    assert {"bad_json", "bad_encoding", "missing_field", "bad_url"} <= set(cst.skips)
    assert {"no_src", "data_uri", "no_text"} <= set(cst.counts)


def test_page_parts_equal_url_resolver():
    """The page URLs rows() takes in C get exactly UrlResolver's shortcut state; the rest is left to Python."""
    rng = random.Random(9)
    starts = ["http://", "https://", "https://", "HTTP://", "ftp://", "http:/", "https://:80", "http://u@", ""]
    pieces = [
        "a",
        "B",
        "é",
        "/",
        "/",
        "//",
        "?",
        "#",
        ";",
        ":",
        "@",
        "[",
        "]",
        "\\",
        " ",
        "\t",
        "\x7f",
        ".",
        "..",
        "/.",
        "8080",
        "%20",
        "\u3000",
        "x.html",
        "h.example",
    ]
    taken = 0
    for _ in range(20000):
        url = rng.choice(starts) + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        parts = _native.page_parts(url)
        if parts is not None:
            taken += 1
            assert parts == UrlResolver(url).shortcut_parts(), url
    assert taken > 500, taken  # 810 of these adversarial URLs
    for url in [
        "https://h.example",
        "http://h.example/",
        "https://h.example:8080/a/b/c.html?q=1#f",
        "https://h.example/a//b/",
        "https://h.example/é/",
    ]:  # the common shapes are taken in C
        assert _native.page_parts(url) == UrlResolver(url).shortcut_parts(), url
    for url in ["https://u@h.example/", "https://bü.example/", "http://[::1]/", "https://h.example;p/", "ftp://h/"]:
        assert _native.page_parts(url) is None, url


def test_compiled_path_on_the_fixed_page(tmp_path):
    path = tmp_path / "p.wat.gz"
    write_members(path, [wat_record(PAGE, wat_json(PAGE, PAGE_LINKS))])
    comp, cst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=True)
    ref, rst = wat.read_wat_reference(path, snapshot=SNAP, source_name=path.name)
    assert comp.equals(ref) and cst.as_dict() == rst.as_dict()
    assert cst.counts == {"data_uri": 1, "no_src": 1, "no_text": 1} and cst.skips == {"bad_url": 2}


def test_rows_hands_back_what_it_does_not_handle():
    cols = pool.PoolColumns()

    def cb(*args):
        raise AssertionError("no page callback for a payload handed back")

    for payload in [
        b'{"Envelope":{"Payload-Metadata":{}}} x',  # trailing data
        b'{"Envelope":{"Payload-Metadata":{},"Payload-Metadata":{}}}',  # repeated tracked key
        b'{"Envel\\u006fpe":{"Payload-Metadata":{}}}',  # escaped tracked key
        b'{"Envelope":{}}',  # no Payload-Metadata
        b'["IMG@/src"]',  # not an object
        b'{"Envelope":{"Payload-Metadata":{"HTTP-Response-Metadata":"IMG@/src"}}}',
        b'{"a":"\\ud800","Envelope":{"Payload-Metadata":{}}}',  # lone surrogate anywhere
        b'{"a":"\\ud800\\u0041","Envelope":{"Payload-Metadata":{}}}',  # high surrogate + a non-surrogate
        b'{"a":"\\udc00\\ud800","Envelope":{"Payload-Metadata":{}}}',  # halves swapped
        b'{"a":"\xff","Envelope":{"Payload-Metadata":{}}}',  # invalid UTF-8 anywhere
        b'{"a":' + b"[" * 300 + b"]" * 300 + b',"Envelope":{"Payload-Metadata":{}}}',  # deeper than the limit
    ]:
        assert _native.rows(payload, 0, len(payload), b"", 0, cb, cb, cols) is None, payload
    ok = b' {"Envelope":{"Payload-Metadata":{"x":[1,-0.5e+3,true,false,null,{"y":"\\u00e9\\ud83d\\ude00"}]}}} '
    assert _native.rows(ok, 0, len(ok), b"", 0, cb, cb, cols) == (0,) * 6  # valid, no links: no callback
    assert len(cols) == 0
    with pytest.raises(ValueError):
        _native.rows(ok, 5, len(ok) + 1, b"", 0, cb, cb, cols)
    # member(): a Content-Length that is not all digits is the Python path's bad_warc, even where its
    # characters would add up to the right length ("1<" read digit by digit is 22)
    head = b"WARC/1.0\r\nWARC-Type: metadata\r\nContent-Length: %s\r\n\r\n"
    payload = b'{"Payload-Metadata":0}'
    assert _native.member(head % b"22" + payload, 0, cb, cb, cols) == (0,) * 6
    assert _native.member(head % b"1<" + payload, 0, cb, cb, cols) is None


def test_member_framing_equals_python(tmp_path, monkeypatch):
    """_native.member takes members in CC's layout whole; every other header shape must read as in Python."""
    rng = random.Random(3)
    uri = "https://m.example/p.html"
    good = wat_json(uri, [img("/a.jpg", alt="A"), img("b.jpg", title="B")])
    plain = wat_json(uri, [{"path": "A@/href", "url": "/x"}])
    variants = [
        lambda h: h,
        lambda h: h.replace(b"WARC-Type: metadata", b"WARC-Type:   METADATA  "),
        lambda h: h.replace(b"WARC-Type: metadata", b"WARC-Type: response"),
        lambda h: h.replace(b"WARC-Type: metadata", b"WARC-Type: metadatas"),
        lambda h: h.replace(b"WARC-Type: metadata", b"warc-type: metadata"),  # lower-case name: Python path
        lambda h: h.replace(b"WARC-Type: metadata\r\n", b""),  # no type at all
        lambda h: h.replace(b"Content-Length: ", b"Content-Length:  0"),  # leading zeros
        lambda h: h.replace(b"Content-Length: ", b"content-length: "),
        lambda h: h.replace(b"Content-Length: ", b"Content-Length: +"),
        lambda h: h.replace(b"WARC/1.0", b"WARC/1.1"),
        lambda h: h.replace(b"WARC/1.0", b"HTTP/1.1"),
        lambda h: h.replace(b"WARC-Target-URI: ", b"WARC-Target-URI: <").replace(
            b"\r\nWARC-Date", b">\r\nWARC-Date", 1
        ),
    ]
    tails = [b"\r\n\r\n", b"", b"\r\n", b"\r\n\r\n\r\n", b"\n", b"\r\n\r\nx", b" \r\n\r\n"]
    members = [warcinfo()]
    for _ in range(400):
        payload = rng.choice(
            [good, good, good, plain, plain, plain[:-30], plain.replace(b'"Payload-Metadata"', b'"P"'), b"{}"]
        )
        if rng.random() < 0.3:  # a payload without the envelope URL: the WARC header's is used
            payload = payload.replace(f'"WARC-Target-URI":"{uri}"'.encode(), b'"WARC-Target-URI":""')
        rec = gzip.decompress(wat_record(uri, payload))
        head, _, rest = rec.partition(b"\r\n\r\n")
        body = rest[: len(payload)]
        change = variants[0] if rng.random() < 0.4 else rng.choice(variants)
        rec = change(head) + b"\r\n\r\n" + body + (tails[0] if rng.random() < 0.4 else rng.choice(tails))
        if rng.random() < 0.1:  # two records in one member
            rec = rec + gzip.decompress(wat_record(uri, good))
        members.append(gzip.compress(rec))
    path = tmp_path / "m.warc.wat.gz"
    write_members(path, members)

    taken = {"n": 0}
    real_member = _native.member

    def counting(*args):
        out = real_member(*args)
        taken["n"] += out is not None
        return out

    fast, fst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=False)
    monkeypatch.setattr(wat._native, "member", counting)
    comp, cst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=True)
    assert comp.equals(fast) and cst.as_dict() == fst.as_dict()
    assert 100 < taken["n"] < 350, taken  # both the compiled framing and the Python framing ran
    assert comp.height > 50 and {"bad_warc", "bad_json", "missing_field"} <= set(cst.skips)
