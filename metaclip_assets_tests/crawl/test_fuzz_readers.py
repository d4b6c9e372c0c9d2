"""Property-based fuzzing of every reader: gzip framing, the WAT reader (compiled and Python rows), the WARC HTML
reader and image URL resolution (issue 16).

Deterministic: hypothesis runs derandomized with no example database, a bounded number of cases per test (the
module takes ~30 s on 2 cores), so CI sees the same cases every run. Inputs are built from fragments that matter to
the readers (damaged gzip members, JSON escapes and lone surrogates, numbers past every parser's limit, content
codings, charsets, URL pieces) rather than from random bytes, which would almost never get past the gzip CRC.
Invariants, on every case:
- no exception leaves a reader (their documented errors are for bad arguments, not bad input);
- every intact gzip member is read at its offset, and every byte not read is counted (`bytes_skipped`);
- every image link is a row or counted: images_seen - (no_src + data_uri + bad_url + no_text) links make
  between one and three rows each; every record of an intact file is read;
- the compiled WAT rows equal the Python rows, counts included;
- every string written is encodable (the pool frame is built from them).
A crash found here becomes an `@example` on its test (the ones below are the issue's holes 2-5), so it is rerun
first, on every run. The memory bound on decompression bombs is `test_hostile.py`'s subprocess test.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from unittest import mock
from urllib.parse import urljoin, urlsplit

import brotli
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from metaclip_assets import _native
from metaclip_assets.crawl import framing, warc_html, wat
from metaclip_assets.crawl.pool import ReadStats, has_surrogates
from metaclip_assets.crawl.urls import UrlResolver
from metaclip_assets_tests.crawl._records import (
    SNAP,
    html_response,
    img,
    runaway_member,
    wat_json,
    wat_record,
    write_members,
    zero_bomb,
)

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _no_local_constants(monkeypatch):
    """Derandomized runs must be the same runs everywhere. Hypothesis also draws constants it collects from the
    modules imported so far (and caches them in .hypothesis/constants), so its cases depended on which tests ran
    before and on the source tree: a case seen in the full suite did not show alone. Draw from no local constants."""
    from hypothesis.internal.conjecture import providers

    empty = providers.Constants(
        integers=providers.SortedSet(),
        floats=providers.SortedSet(key=providers.float_to_int),
        bytes=providers.SortedSet(),
        strings=providers.SortedSet(),
    )
    monkeypatch.setattr(providers, "_get_local_constants", lambda: empty)


def _file(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.mktemp("fuzz") / name


# --- gzip framing -----------------------------------------------------------------------------------------------

_MEMBERS = [
    wat_record(f"http://m{i}.example/", wat_json(f"http://m{i}.example/", [img("/a.jpg", alt=f"t{i}")]))
    for i in range(4)
] + [gzip.compress(b"not a warc record"), gzip.compress(b"")]

# (kind, where in the member as a share of its length, a byte or a length)
_DAMAGE = st.tuples(
    st.sampled_from(["flip", "cut", "garbage", "runaway", "magic", "zero", "append", "bomb"]),
    st.floats(0, 1),
    st.integers(0, 255),
)


def _damaged(member: bytes, kind: str, where: float, n: int) -> bytes:
    i = min(len(member) - 1, int(where * len(member)))
    if kind == "flip":
        return member[:i] + bytes([member[i] ^ (1 << (n % 8))]) + member[i + 1 :]
    if kind == "cut":
        return member[:i]
    if kind == "garbage":
        return member[:i] + bytes((n + k) % 256 for k in range(40)) + member[i:]
    if kind == "runaway":
        return runaway_member()
    if kind == "magic":  # a chance gzip magic inside the data
        return member[:i] + framing._GZIP_MAGIC + bytes([n & 0x1F]) + member[i:]
    if kind == "zero":
        return member[:i] + bytes(n % 64) + member[i + n % 64 :]
    if kind == "append":  # garbage after a complete member
        return member + bytes([n]) * 7
    return framing._GZIP_MAGIC + b"\x00" * 6 + b"\xff" + zero_bomb(4 * 1024 * 1024)[0]  # inflates past a 1 MiB cap


def _ground_truth(member: bytes, cap: int) -> tuple[bytes, int] | None:
    """(data, compressed length) if the member alone inflates to its end within `cap`, else None."""
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(member, cap + 1)
    except zlib.error:
        return None
    if not d.eof or len(out) > cap:
        return None
    return out, len(member) - len(d.unused_data)


@settings(FUZZ, max_examples=1000)
@given(picks=st.lists(st.tuples(st.integers(0, len(_MEMBERS) - 1), st.none() | _DAMAGE), min_size=1, max_size=8))
@example(picks=[(0, None), (1, ("runaway", 0, 0)), (2, None), (3, None)])  # hole 3: ran on to the end of the file
@example(picks=[(0, None), (1, ("runaway", 0, 0)), (1, ("runaway", 0, 0)), (2, None)])  # two in a row
@example(picks=[(0, ("bomb", 0, 0)), (1, None)])  # hole 4: a member past the cap
@example(picks=[(5, ("flip", 0.1875, 5))])  # reserved FLG bits set: ISA-L inflated it, zlib (and RFC 1952) refuse
def test_gzip_framing(tmp_path_factory, picks):
    cap = 1 << 20
    members = [_MEMBERS[i] if damage is None else _damaged(_MEMBERS[i], *damage) for i, damage in picks]
    path = _file(tmp_path_factory, "f.warc.wat.gz")
    offsets = write_members(path, members)
    stats = ReadStats()
    with mock.patch.object(framing, "MAX_MEMBER_BYTES", cap):
        got = list(framing.iter_gzip_members(path, stats))
    for (off, member), damage in zip(zip(offsets, members), (d for _, d in picks)):
        truth = _ground_truth(member, cap)
        if damage is None or (truth is not None and truth[1] == len(member)):  # an intact member is read
            assert truth is not None and (off, truth[0]) in got, (off, damage)
    # every byte of the file is in a member read or counted as skipped: the members read, in order, without overlap
    raw, end, read_bytes = path.read_bytes(), 0, 0
    for off, data in got:
        assert off >= end and len(data) <= cap
        decoded = _ground_truth(raw[off:], cap)
        assert decoded is not None and decoded[0] == data
        end = off + decoded[1]
        read_bytes += decoded[1]
    assert read_bytes + sum(stats.bytes_skipped.values()) == len(raw), (stats, read_bytes)
    lost = sum(stats.skips.get(r, 0) for r in ("bad_gzip", "truncated_gzip", "too_large"))
    assert (lost > 0) == (sum(stats.bytes_skipped.values()) > 0), stats
    assert set(stats.skips) <= {"bad_gzip", "truncated_gzip", "too_large"}


# --- WAT --------------------------------------------------------------------------------------------------------

# JSON string bodies as written in the payload: escapes, lone surrogates, controls, Unicode whitespace, URL shapes
_JSON_PIECES = [
    "a",
    "Dog",
    "东京",
    "é",
    " ",
    "\\n",
    "\\r",
    "\\t",
    "\\u00e9",
    "\\ud83d\\ude00",
    "\\ud800",
    "\\udfff",
    "\\ud800\\u0041",
    "\\u0000",
    "\\u3000",
    '\\"',
    "\\\\",
    "/",
    "//",
    "../",
    "./",
    "?q=1",
    "#f",
    ":",
    "@",
    "[",
    "]",
    "%20",
    ";",
    "http://",
    "https://",
    "HTTP://",
    "data:",
    "javascript:",
    "IMG@/src",
    "h.example",
    "x.jpg",
    "\u2028",
    "\x7f",
]
_JSON_STR = st.lists(st.sampled_from(_JSON_PIECES), max_size=6).map(lambda p: '"' + "".join(p) + '"')
# numbers and other values in typed or untracked places
_JSON_VALUE = _JSON_STR | st.sampled_from(
    ["null", "5", "-0.5e+3", "1" * 5001, "-" + "9" * 4400, "1e99999", "[]", "{}", "true", '["IMG@/src"]']
)


@st.composite
def _wat_payload(draw) -> bytes:
    n = draw(st.integers(0, 4))
    links = []
    for _ in range(n):
        link = {"path": draw(st.sampled_from(['"IMG@/src"', '"IMG@/src"', '"A@/href"', "5"])), "url": draw(_JSON_STR)}
        for key in ("alt", "title", "data-image-title"):
            if draw(st.booleans()):
                link[key] = draw(_JSON_STR if draw(st.integers(0, 5)) else _JSON_VALUE)
        links.append("{" + ",".join(f'"{k}":{v}' for k, v in link.items()) + "}")
    page = draw(st.sampled_from(["https://p.example/d/x.html", "http://p.example", "<http://w.example/a/>", "x"]))
    payload = wat_json(page, [img("/SLOT")], base="BASE").decode()
    payload = payload.replace('[{"path":"IMG@/src","url":"/SLOT"}]', "[" + ",".join(links) + "]")
    for field, old in (("Base", '"BASE"'), ("WARC-Target-URI", f'"{page}"'), ("WARC-Date", '"2024-05-18T01:58:10Z"')):
        if draw(st.integers(0, 3)) == 0:
            payload = payload.replace(f'"{field}":{old}', f'"{field}":{draw(_JSON_VALUE)}', 1)
        elif field == "Base":
            payload = payload.replace('"Base":"BASE"', '"Base":"/b/"' if draw(st.booleans()) else '"N":0', 1)
    if draw(st.integers(0, 4)) == 0:  # a number past every parser's limit somewhere untracked
        payload = payload.replace('"Container":', '"Container":' + draw(_JSON_VALUE) + ',"c":', 1)
    if draw(st.integers(0, 6)) == 0:  # a cut
        payload = payload[: draw(st.integers(0, len(payload)))]
    return payload.encode()


def _links_add_up(df, st_: ReadStats) -> None:
    c = st_.counts
    rowed = (
        st_.images_seen - c.get("no_src", 0) - c.get("data_uri", 0) - c.get("no_text", 0) - st_.skips.get("bad_url", 0)
    )
    assert 0 <= rowed <= df.height <= 3 * rowed, (df.height, st_)


@settings(FUZZ, max_examples=300)
@given(payloads=st.lists(_wat_payload(), min_size=1, max_size=6), damage=st.none() | st.none() | _DAMAGE)
@example(  # hole 2: lone surrogates in the envelope's page URL and date
    payloads=[
        wat_json("https://p.example/", [img("/a.jpg", alt="a")]).replace(
            b'"WARC-Target-URI":"https://p.example/"', b'"WARC-Target-URI":"https://p.example/\\ud800"'
        ),
        wat_json("https://p.example/", [img("/a.jpg", alt="a")]).replace(b'T01:58:10Z"', b'\\udc00"'),
    ],
    damage=None,
)
@example(  # hole 5: a 5,001-digit integer
    payloads=[
        wat_json("https://p.example/", [img("/a.jpg", alt="a")]).replace(
            b'"Container":', b'"N":' + b"1" * 5001 + b',"Container":'
        )
    ],
    damage=("runaway", 0, 0),
)
def test_wat_reader(tmp_path_factory, payloads, damage):
    path = _file(tmp_path_factory, "w.warc.wat.gz")
    members = [wat_record("http://h.example/", p) for p in payloads]
    if damage is not None:  # framing damage too: the rows of what is read still agree
        members[-1] = _damaged(members[-1], *damage)
    write_members(path, members)
    comp, cst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=True)
    py, pst = wat.read_wat(path, snapshot=SNAP, source_name=path.name, compiled=False)
    assert comp.equals(py) and cst.as_dict() == pst.as_dict()
    if damage is None:
        assert cst.records_read == len(payloads) and not cst.bytes_skipped
    _links_add_up(comp, cst)
    assert not any(has_surrogates(s) for col in ("url", "text", "page_url", "fetch_time") for s in comp[col] if s)


# --- WARC HTML --------------------------------------------------------------------------------------------------

_HTML_PIECES = [
    "<img src=/a.jpg alt=x>",
    '<img src="b.png" title="T&amp;C">',
    "<img alt=none>",
    '<img src="" alt="e">',
    '<IMG SRC="data:image/png;base64,AA" ALT="d">',
    "<img src='//c.example/c.gif' data-image-title='dit'>",
    '<img src="javascript:x" alt="j">',
    '<img src="http://[::1" alt="v6">',
    "<base href='/base/'>",
    '<img src="/s.jpg" alt="&#xD800;&#0;&#x110000;">',
    '<img src="/\u00e9\u3000.jpg" alt=" \u3000pad\n">',
    "<!-- <img src=/hidden.jpg alt=h> -->",
    "<script>'<img src=/s alt=s>'</script>",
    "<div>",
    "</div>",
    "<p>text",
    "<meta charset=shift_jis>",
    "<meta charset=utf-16>",
    "\u65e5\u672c",
    "\xff",
    "<img src=x alt=" + "a" * 300 + ">",
]
_CODINGS = ["", "", "gzip", "deflate", "br", "chunked", "gzip-cut", "bogus"]


def _encode(html: bytes, coding: str) -> tuple[bytes, list[tuple[str, str]]]:
    if coding == "gzip":
        return zlib.compress(html, wbits=31), [("Content-Encoding", "gzip")]
    if coding == "gzip-cut":  # a WARC-Truncated payload: what inflates before the cut is kept
        return zlib.compress(html, wbits=31)[:-12], [("Content-Encoding", "gzip")]
    if coding == "deflate":
        return zlib.compress(html, wbits=-15), [("Content-Encoding", "deflate")]
    if coding == "br":
        return brotli.compress(html, quality=1), [("Content-Encoding", "br")]
    if coding == "chunked":
        return b"%x\r\n%s\r\n0\r\n\r\n" % (len(html), html), [("Transfer-Encoding", "chunked")]
    if coding == "bogus":
        return html, [("Content-Encoding", "compress")]
    return html, []


@settings(FUZZ, max_examples=500)
@given(
    pages=st.lists(
        st.tuples(
            st.lists(st.sampled_from(_HTML_PIECES), max_size=10).map("".join),
            st.sampled_from(_CODINGS),
            st.sampled_from(["text/html", "text/html; charset=cp1252", "text/html; charset=bogus", "image/png"]),
            st.sampled_from(["utf-8", "cp1252", "utf-16"]),
        ),
        min_size=1,
        max_size=5,
    ),
    small_cap=st.booleans(),
)
@example(pages=[("<img src=/a.jpg alt=x>", "gzip", "text/html", "utf-8")], small_cap=True)  # hole 4, scaled down
def test_warc_html_reader(tmp_path_factory, pages, small_cap):
    members = []
    for html, coding, ctype, charset in pages:
        body, extra = _encode(html.encode(charset, "replace"), coding)
        members.append(html_response("http://h.example/p/", body, content_type=ctype, extra=extra))
    path = _file(tmp_path_factory, "h.warc.gz")
    write_members(path, members)
    with mock.patch.object(warc_html, "MAX_BODY_BYTES", 64 if small_cap else warc_html.MAX_BODY_BYTES):
        df, st_ = warc_html.read_warc_html(path, snapshot=SNAP, source_name=path.name)
    assert st_.records_read == len(pages) and not st_.bytes_skipped
    assert set(st_.skips) <= {"bad_encoding", "bad_url", "too_large"}, st_.skips
    _links_add_up(df, st_)
    if small_cap:  # every HTML page over 64 bytes after a complete decoding is counted, none parsed
        over = sum(
            len(html.encode(charset, "replace")) > 64 and coding in ("", "gzip", "deflate", "br", "chunked")
            for html, coding, ctype, charset in pages
            if ctype.startswith("text/html")
        )
        assert st_.skips.get("too_large", 0) >= over, (over, st_.skips)


# --- URL resolution ---------------------------------------------------------------------------------------------

_URL_PIECES = (
    "a B é / // ? # ; : @ [ ] \\ . .. /. ../ %20 %zz x.jpg h.example 8080 http:// https:// HTTP:// data:".split()
)
_URL_PIECES += ["ftp://", "[::1]", " ", "\t", "\x00", "\x7f", "\u3000", "\ufffd", "\u2028"]
_URL = st.lists(st.sampled_from(_URL_PIECES), max_size=8).map("".join)


@settings(FUZZ, max_examples=3000)
@given(page=_URL, base=st.none() | _URL, src=_URL)
@example(page="http://[::1", base=None, src="a.jpg")
@example(page="https://h.example/d/", base="//[x", src="../../a.jpg")
def test_url_resolution(page, base, src):
    resolver = UrlResolver(page, base)
    src = src.strip()  # as image_url() passes it on; an empty src never reaches resolve()
    if not src:
        return
    url = resolver.resolve(src)
    try:
        expected = urljoin(resolver.base, src)
        split = urlsplit(expected)
        ok = split.scheme in ("http", "https") and bool(split.hostname)
    except ValueError:
        expected, ok = None, False
    assert url == (expected if ok else None), (page, base, src)
    if url is not None:
        url.encode()  # encodable: the inputs are (the readers never pass lone surrogates)
    short = _native.resolve(src, *resolver.shortcut_parts())
    assert short is None or short == url, (page, base, src)
