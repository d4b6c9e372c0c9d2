"""Hostile inputs (issue 16, holes 2-5): each test here failed on the readers before its fix.

Every reader (compiled WAT rows, Python WAT rows, the warcio + json reference where it applies, the WARC HTML
reader) must finish the file, read every intact record, and count what it drops under a reason.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib

import brotli
import polars as pl
import pytest

from metaclip_assets.crawl import framing, warc_html, wat
from metaclip_assets.crawl.build import build_pool
from metaclip_assets_tests.crawl._records import (
    SNAP,
    html_response,
    img,
    runaway_member,
    warcinfo,
    wat_json,
    wat_page,
    wat_record,
    write_members,
    zero_bomb,
)

URI = "http://a.example/"


def _texts(df: pl.DataFrame) -> list[str]:
    return df["text"].to_list()


def _wat_readers(path, *, reference: bool = True):
    """(name, frame, stats) of every WAT reader; the frames and stats must all be equal."""
    out = [
        ("compiled", *wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=True)),
        ("python", *wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=False)),
    ]
    if reference:
        out.append(("reference", *wat.read_wat_reference(path, snapshot=SNAP, source_name=path.name)))
    for name, df, st in out[1:]:
        assert df.equals(out[0][1]), name
        assert st.as_dict() | {"bytes_skipped": {}} == out[0][2].as_dict() | {"bytes_skipped": {}}, name
    return out


def _good(uri: str, alt: str) -> list[bytes]:
    return wat_page(uri, [img("/i.jpg", alt=alt)])


# --- hole 2: lone surrogates in the envelope's strings ----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "texts", "skips", "fetch_time"),
    [
        # page URL: every image URL is resolved against it, so the page is skipped and counted
        (f'"WARC-Target-URI":"{URI}"', f'"WARC-Target-URI":"{URI}\\ud800x"', [], {"bad_encoding": 1}, None),
        (f'"WARC-Target-URI":"{URI}"', '"WARC-Target-URI":"http://a\\udfff.example/"', [], {"bad_encoding": 1}, None),
        ('"Base":"BASE"', '"Base":"/b\\udc00/"', [], {"bad_encoding": 1}, None),
        # date: carried along only, so repaired as a WARC header's bad bytes are
        ('"WARC-Date":"2024-05-18T01:58:10Z"', '"WARC-Date":"2024\\ud83d"', ["A", "B"], {}, "2024\ufffd"),
        # image URL and texts: as before, counted per link / per text
        ('"url":"/a.jpg"', '"url":"/a\\ud800.jpg"', ["B"], {"bad_url": 1}, "2024-05-18T01:58:10Z"),
        ('"alt":"A"', '"alt":"A\\udfff"', ["B"], {"bad_encoding": 1}, "2024-05-18T01:58:10Z"),
    ],
)
def test_lone_surrogates_in_any_string_field(tmp_path, old, new, texts, skips, fetch_time):
    payload = wat_json(URI, [img("/a.jpg", alt="A"), img("http://abs.example/b.jpg", alt="B")], base="BASE")
    payload = payload.replace(b'"Base":"BASE"', b'"Base":"/"') if "Base" not in old else payload
    assert old.encode() in payload
    payload = payload.replace(old.encode(), new.encode())
    path = tmp_path / "s.warc.wat.gz"
    write_members(path, [*_good("http://f.example/", "first"), wat_record(URI, payload), *_good(URI, "last")])
    for name, df, st in _wat_readers(path):
        assert _texts(df) == ["first", *texts, "last"], name
        assert st.skips == skips and st.records_read == 7, name
        if fetch_time is not None:
            assert df.filter(pl.col("text") == "B")["fetch_time"].to_list() == [fetch_time], name
    # the shard completes: the whole pool builds and writes (crawl_pool failed here with UnicodeEncodeError)
    pool, st = build_pool([(path, "s.warc.wat.gz")], snapshot=SNAP)
    pool.write_parquet(tmp_path / "pool.parquet")
    assert st.skips == skips


# --- hole 3: one damaged gzip member must not lose the rest of the file ---------------------------------------


def test_damaged_member_that_runs_to_the_end_loses_only_itself(tmp_path):
    runaway = runaway_member()
    members = [warcinfo(), *_good("http://a.example/", "first"), runaway, *_good("http://b.example/", "second")]
    members += _good("http://c.example/", "third")
    path = tmp_path / "r.warc.wat.gz"
    offsets = write_members(path, members)
    for name, df, st in _wat_readers(path, reference=False):
        assert _texts(df) == ["first", "second", "third"], name
        assert df["record_offset"].to_list() == [offsets[2], offsets[6], offsets[9]], name
        assert st.skips == {"bad_gzip": 1} and st.records_read == len(members) - 1, name
        assert st.bytes_skipped == {"bad_gzip": len(runaway)}, name
    # the WARC HTML reader shares the framing
    html = [html_response(f"http://{h}.example/", f'<img src="/i.jpg" alt="{h}">'.encode()) for h in "abc"]
    path = tmp_path / "r.warc.gz"
    write_members(path, [html[0], runaway, html[1], html[2]])
    df, st = warc_html.read_warc_html(path, snapshot=SNAP, source_name=path.name)
    assert _texts(df) == ["a", "b", "c"] and st.skips == {"bad_gzip": 1} and st.records_read == 3


def test_each_damaged_member_and_a_real_truncation_are_counted(tmp_path):
    runaway = runaway_member()
    path = tmp_path / "d.warc.wat.gz"
    # two damaged members in a row: the second has a member header of its own, so it is counted too
    write_members(path, [*_good("http://a.example/", "first"), runaway, runaway, *_good("http://b.example/", "x")])
    for name, _, st in _wat_readers(path, reference=False):
        assert st.skips == {"bad_gzip": 2} and st.bytes_skipped == {"bad_gzip": 2 * len(runaway)}, name
    # nothing intact after it: the file really is cut, and one truncated_gzip says so
    write_members(path, [*_good("http://a.example/", "first"), runaway])
    for name, df, st in _wat_readers(path, reference=False):
        assert _texts(df) == ["first"], name
        assert st.skips == {"truncated_gzip": 1} and st.bytes_skipped == {"truncated_gzip": len(runaway)}, name


def test_member_span_is_bounded(tmp_path, monkeypatch):
    # a valid member of 2,000 empty stored blocks: 10 KB of input, no output. With the span capped below that it
    # is given up (bad_gzip) instead of being read to its end: damage cannot make one member consume a whole file.
    empty_member = (
        framing._GZIP_MAGIC
        + b"\x00" * 6
        + b"\xff"
        + b"\x00\x00\x00\xff\xff" * 2000
        + b"\x01\x00\x00\xff\xff"
        + struct.pack("<II", 0, 0)
    )
    assert gzip.decompress(empty_member) == b""
    path = tmp_path / "e.warc.wat.gz"
    write_members(path, [*_good("http://a.example/", "first"), empty_member, *_good("http://b.example/", "x")])
    _, st = wat.read_wat(path, snapshot=SNAP, source_name=path.name)
    assert st.skips == {} and st.records_read == 6  # an empty member holds no record
    monkeypatch.setattr(framing, "MAX_MEMBER_BYTES", 4096)
    monkeypatch.setattr(framing, "_MAX_HEADER_BYTES", 0)
    df, st = wat.read_wat(path, snapshot=SNAP, source_name=path.name)
    assert _texts(df) == ["first", "x"] and st.skips == {"bad_gzip": 1}
    assert st.bytes_skipped == {"bad_gzip": len(empty_member)}


# --- hole 4: decompressed size caps -----------------------------------------------------------------------------


def test_html_body_over_the_cap_is_too_large(tmp_path):
    cap = warc_html.MAX_BODY_BYTES
    bomb, size = zero_bomb(cap + 1)  # raw deflate: ~52 KB that inflate past the cap
    assert size > cap
    over = b"<p>" + b"x" * cap
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(over), over)

    def page(host: str, body: bytes, *extra: tuple[str, str]) -> bytes:
        return html_response(f"http://{host}.example/", body, extra=list(extra))

    members = [
        page("a", b'<img src="/a.jpg" alt="first">'),
        page("d", bomb, ("Content-Encoding", "deflate")),
        page("g", zlib.compress(over, wbits=31), ("Content-Encoding", "gzip")),
        page("b", brotli.compress(over, quality=1), ("Content-Encoding", "br")),
        page("c", chunked, ("Transfer-Encoding", "chunked")),
        page("i", over),  # no coding at all, but still more HTML than the cap
        page("z", b'<img src="/z.jpg" alt="last">'),
    ]
    path = tmp_path / "b.warc.gz"
    write_members(path, members)
    df, st = warc_html.read_warc_html(path, snapshot=SNAP, source_name=path.name)
    assert _texts(df) == ["first", "last"]
    assert st.skips == {"too_large": 5} and st.records_read == 7
    # the decoders stop at the cap without inflating further (the bomb here would be 16 MB; see the memory test)
    with pytest.raises(warc_html.TooLarge):
        warc_html.decode_content(bomb, "deflate", limit=1000)
    assert warc_html.decode_content(zlib.compress(b"abc" * 10), "deflate", limit=30) == b"abc" * 10


def test_member_over_the_cap_is_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(framing, "MAX_MEMBER_BYTES", 64 << 10)
    big = wat_record(URI, wat_json(URI, [img("/a.jpg", alt="y" * (100 << 10))]))
    path = tmp_path / "l.warc.wat.gz"
    write_members(path, [*_good("http://f.example/", "first"), big, *_good(URI, "last")])
    for name, df, st in _wat_readers(path, reference=False):
        assert _texts(df) == ["first", "last"], name
        assert st.skips == {"too_large": 1} and st.bytes_skipped == {"too_large": len(big)}, name


_PEAK_RSS = """
import resource, sys
from pathlib import Path
from metaclip_assets.crawl.build import read_source_file
for name in sys.argv[1:]:
    df, st = read_source_file(Path(name), snapshot="x", source_name=name)
    print(name, df.height, dict(st.skips))
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_decompression_bombs_stay_under_the_memory_bound(tmp_path):
    """4.3 GB bombs (an HTTP body in a WARC, a gzip member in a WAT): each reader's peak RSS stays < 1.5 GiB."""
    bomb, size = zero_bomb(4_300_000_000)  # 27 MB of raw deflate
    assert size >= 4_300_000_000
    warc = tmp_path / "bomb.warc.gz"
    good = html_response("http://g.example/", b'<img src="/g.jpg" alt="good">')
    write_members(warc, [html_response(URI, bomb, extra=[("Content-Encoding", "deflate")]), good])
    member = framing._GZIP_MAGIC + b"\x00" * 6 + b"\xff" + bomb + struct.pack("<II", 0, size & 0xFFFFFFFF)
    wat_file = tmp_path / "bomb.warc.wat.gz"
    write_members(wat_file, [member, *_good(URI, "good")])
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(warc), str(wat_file)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].endswith(" 1 {'too_large': 1}") and lines[1].endswith(" 1 {'too_large': 1}"), lines
    peak = int(lines[-1].split()[1]) << 10
    print(f"peak RSS {peak / 2**20:.0f} MiB")
    assert peak < 1.5 * (1 << 30), f"peak RSS {peak / 2**20:.0f} MiB"


# --- hole 5: compiled and Python readers agree on numbers of any length ---------------------------------------


def test_huge_json_integers_read_the_same_everywhere(tmp_path):
    members = []
    for number in ["1" * 5001, "-" + "9" * 5001, "7" * 4300, "1" * 400, "1e99999", "-1.5E+400", "0"]:
        payload = wat_json(URI, [img("/a.jpg", alt=f"n{len(number)}")])
        payload = payload.replace(b'"Container":{', b'"Container":{"N":' + number.encode() + b",")
        assert json.loads(payload.decode(), parse_int=float)  # valid JSON
        members.append(wat_record(URI, payload))
    path = tmp_path / "n.warc.wat.gz"
    write_members(path, members)
    for name, df, st in _wat_readers(path):
        assert _texts(df) == ["n5001", "n5002", "n4300", "n400", "n7", "n9", "n1"], name
        assert st.skips == {}, name
