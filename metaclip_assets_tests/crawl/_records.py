"""WAT / WARC inputs for the crawl reader tests, written with the shared writer (metaclip_assets.sample.warc_writer)
in Common Crawl's layout: one gzip member per record; WAT = warcinfo + request/response/crawl-metadata `metadata`
records with the ia-web-commons JSON. The WAT payloads here are minimal on purpose (only what the readers look at),
so tests can damage them field by field; the sample snapshot writes the full ones.
"""

from __future__ import annotations

import random

from metaclip_assets.sample import warc_writer as W
from metaclip_assets.sample.warc_writer import write_members

__all__ = [
    "PAGE",
    "PAGE_LINKS",
    "PAGE_ROWS",
    "SNAP",
    "html_response",
    "img",
    "runaway_member",
    "random_links",
    "warc_member",
    "warcinfo",
    "wat_json",
    "wat_page",
    "wat_record",
    "write_members",
    "zero_bomb",
]

SNAP = "CC-TEST-2024-22"
_IDS = W.RecordIds("metaclip-assets tests")


def warc_member(
    rec_type: str,
    uri: str,
    block: bytes,
    *,
    content_type: str,
    payload: bytes | None = None,
    date: str = "2024-05-31T01:17:49Z",
) -> bytes:
    """One WARC capture record as one gzip member."""
    return W.warc_member(
        W.capture_headers(rec_type, uri, date, _IDS(), block, content_type=content_type, payload=payload), block
    )


def warcinfo() -> bytes:
    return W.warcinfo_member(
        "test.warc.wat.gz", "2024-05-31T01:16:45Z", _IDS(), [("software", "metaclip-assets tests")], wat=True
    )


def wat_json(
    uri: str, links=None, *, base: str | None = None, kind: str = "response", date: str = "2024-05-18T01:58:10Z"
) -> bytes:
    """A WAT payload shaped like ia-web-commons writes it (compact, raw UTF-8, '/' unescaped)."""
    envelope = {
        "Format": "WARC",
        "WARC-Header-Length": "512",
        "WARC-Header-Metadata": {"WARC-Type": kind, "WARC-Date": date, "WARC-Target-URI": uri},
    }
    if kind == "request":
        envelope["Payload-Metadata"] = {
            "Actual-Content-Type": "application/http; msgtype=request",
            "HTTP-Request-Metadata": {"Request-Message": {"Method": "GET", "Path": "/"}, "Headers": {"Host": "x"}},
        }
    elif kind == "metadata":  # the WARC's crawl-metadata record
        envelope["Payload-Metadata"] = {
            "Actual-Content-Type": "application/metadata-fields",
            "WARC-Metadata-Metadata": {"Metadata-Records": [{"Name": "fetchTimeMs", "Value": "123"}]},
        }
    elif kind == "response":
        head = {"Title": "a page", "Metas": [{"name": "description", "content": "d"}]}
        if base is not None:
            head["Base"] = base
        html = {"Head": head}
        if links is not None:
            html["Links"] = links
        envelope["Payload-Metadata"] = {
            "Actual-Content-Type": "application/http; msgtype=response",
            "HTTP-Response-Metadata": {
                "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                "Headers": {"Content-Type": "text/html; charset=UTF-8"},
                "HTML-Metadata": html,
            },
        }
    doc = {"Container": {"Filename": "x.warc.gz", "Compressed": True, "Offset": "1"}, "Envelope": envelope}
    return W.json_text(doc).encode()


def wat_record(uri: str, payload: bytes) -> bytes:
    """One WAT `metadata` record (any payload, also a damaged one) as one gzip member."""
    return W.wat_member(uri or None, "2024-05-31T01:17:49Z", _IDS(), _IDS(), payload)  # "": no WARC-Target-URI


def wat_page(uri: str, links, *, base: str | None = None) -> list[bytes]:
    """The three metadata records CC writes per capture: request, response, crawl metadata."""
    return [
        wat_record(uri, wat_json(uri, kind="request")),
        wat_record(uri, wat_json(uri, links, base=base)),
        wat_record(uri, wat_json(uri, kind="metadata")),
    ]


def html_response(
    uri: str,
    body: bytes,
    *,
    content_type: str = "text/html; charset=utf-8",
    extra: list[tuple[str, str]] = (),
    date: str = "2024-05-18T01:58:10Z",
) -> bytes:
    """A WARC response record: HTTP/1.1 200 head with these headers, then `body`."""
    block = W.http_head("HTTP/1.1 200 OK", [("Content-Type", content_type), *extra]).encode() + body
    return warc_member(
        "response", uri, block, content_type="application/http; msgtype=response", payload=body, date=date
    )


def img(src: str, **attrs) -> dict:
    return {"path": "IMG@/src", "url": src, **attrs}


# A page exercising URL resolution and the three text keys, with known expected rows.
PAGE = "https://www.example.org/dir/page.html?q=1"
PAGE_LINKS = [
    {"path": "A@/href", "url": "/about", "text": "About"},
    img("/img/a.jpg", alt="A dog"),  # root-relative
    img("b.png", alt="  two\nlines\r\n ", title="The title"),  # relative; WAT: \n,\r -> space, then strip
    img("//cdn.example.net/c.gif", **{"data-image-title": "Café ☕ 東京"}),  # protocol-relative, unicode
    img("https://other.example.com/d.webp?x=1&y=2", alt="", title="   "),  # texts all empty -> no_text
    img("../up/e.jpg", alt="dots"),  # dot segments (urljoin fallback)
    img("data:image/png;base64,AAAA", alt="inline"),  # data: URI -> counts['data_uri']
    img("javascript:void(0)", alt="js"),  # not http(s) -> bad_url
    img("http://[::1/x.jpg", alt="broken"),  # unbalanced IPv6 bracket: urljoin raises -> bad_url
    img("   ", alt="blank src"),  # -> counts['no_src']
    {"path": "IMG@/src", "alt": "no url key"},  # no url: not an image link at all
    {"path": "LINK@/href", "url": "/style.css", "alt": "not an image"},
]
PAGE_ROWS = [
    ("https://www.example.org/img/a.jpg", "A dog", "alt"),
    ("https://www.example.org/dir/b.png", "two lines", "alt"),
    ("https://www.example.org/dir/b.png", "The title", "title"),
    ("https://cdn.example.net/c.gif", "Café ☕ 東京", "data-image-title"),
    ("https://www.example.org/up/e.jpg", "dots", "alt"),
]


def random_links(rng: random.Random, n: int) -> list[dict]:
    words = ["dog", "Katze", "東京", "café", "a\nb", " pad ", "x\r\ny", "", "photo of a cat", "Ünïcödé 🐱"]
    srcs = [
        "/i/{}.jpg",
        "{}.png",
        "//cdn.example.com/{}.gif",
        "https://img.example.net/p/{}.webp?s=1",
        "../{}.jpg",
        "./{}.jpg",
        "data:image/gif;base64,R0lG",
        "/a//{}.jpg",
        "{}.jpg#frag",
        "HTTP://Up.Example/{}",
    ]
    out = []
    for i in range(n):
        link = {"path": rng.choice(["IMG@/src", "IMG@/src", "A@/href"]), "url": rng.choice(srcs).format(i)}
        for key in ("alt", "title", "data-image-title"):
            if rng.random() < 0.5:
                link[key] = rng.choice(words)
        out.append(link)
    return out


# --- hostile inputs --------------------------------------------------------------------------


def runaway_member() -> bytes:
    """The start of a gzip member whose deflate stream is damaged without a zlib error: a non-final stored block
    of 65,535 bytes that swallows whatever follows it (intact members included) up to the end of a small file."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\x00\xff\xff\x00\x00" + b"swallowed: "


def _fixed_huffman_zeros(reps: int) -> bytes:
    """Raw deflate: one fixed-Huffman block of a literal 0 and `reps` copies of (length 258, distance 1)."""
    out, acc, n = bytearray(), 0, 0

    def put(value: int, nbits: int) -> None:
        nonlocal acc, n
        acc |= value << n
        n += nbits
        while n >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            n -= 8

    def code(c: int, nbits: int) -> None:  # Huffman codes are packed from their most significant bit
        put(int(format(c, f"0{nbits}b")[::-1], 2), nbits)

    put(1, 1)  # BFINAL
    put(1, 2)  # BTYPE 01: fixed Huffman
    code(0x30, 8)  # literal 0
    for _ in range(reps):
        code(0b11000101, 8)  # length 258 (code 285)
        code(0, 5)  # distance 1
    code(0, 7)  # end of block
    if n:
        out.append(acc)
    return bytes(out)


def zero_bomb(size: int) -> tuple[bytes, int]:
    """(raw deflate stream, its inflated size >= `size`) of zeros, ~13 bits per 258 bytes: 27 MB inflate to 4.3 GB.

    Eight (length, distance) pairs are 104 bits, 13 whole bytes, so the stream is the 9-pair one with bytes 3..16
    (pairs 1-8, which start on a byte boundary) repeated: built in O(output / 2064) without running a compressor.
    """
    base = _fixed_huffman_zeros(9)
    m = max(0, (size - 1 - 258 * 9) // (258 * 8) + 1)
    return base[:3] + base[3:16] * m + base[3:], 1 + 258 * (9 + 8 * m)
