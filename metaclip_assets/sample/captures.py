"""How one page is captured: its HTML, the HTTP exchange, the WARC request / response / metadata records CommonCrawl
stores for it, and the three WAT payloads that describe those records (true lengths, offsets and digests).

Plain functions of a `Page`; record ids come from the caller's `RecordIds`, so their order is the caller's.
"""

from __future__ import annotations

import html
from datetime import timedelta
from urllib.parse import urlsplit

from metaclip_assets.sample import warc_writer as W
from metaclip_assets.sample.web import Img, Page


def _attrs(img: Img, src_attr: str = "src") -> str:
    out = f' {src_attr}="{html.escape(img.ref)}"'
    for t in img.texts:
        out += f' {t.key}="{html.escape(t.raw)}"'
    return out


def render_html(page: Page) -> str:
    site = page.site
    base = f'<base href="{site.base}">\n' if site.base else ""
    body = []
    for img in page.imgs[1:]:
        tag = f'<img{_attrs(img)} loading="lazy" width="640" height="480">'
        body.append(f"<figure>{tag}</figure>" if img.link is None else f'<a href="{img.link}">{tag}</a>')
    for img in page.lazy:
        body.append(f'<img{_attrs(img, "data-src")} class="lazyload">')
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="{page.charset.lower()}">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(page.title)}</title>\n{base}"
        f'<meta property="og:title" content="{html.escape(page.title)}">\n'
        f'<link rel="stylesheet" href="/static/css/site.css">\n</head>\n<body>\n'
        f'<header><a href="/"><img{_attrs(page.imgs[0])}></a>\n'
        f'<nav><a href="/">Home</a> <a href="/gallery/">Gallery</a> <a href="/about">About us</a></nav>'
        f"</header>\n<main>\n<h1>{html.escape(page.title)}</h1>\n"
        + "\n".join(body)
        + '\n<p>Posted in <a href="/blog/">Blog</a>.</p>\n</main>\n'
        '<footer><a href="/contact" rel="nofollow">Contact</a></footer>\n</body>\n</html>\n'
    )


def wat_links(page: Page) -> list[dict]:
    """HTML-Metadata Links in document order, as ia-web-commons records them (raw, unresolved URLs)."""

    def img_link(img):
        d = {"path": "IMG@/src", "url": img.ref}
        d.update({t.key: t.raw for t in img.texts})
        return d

    links = [
        {"path": "A@/href", "url": "/"},
        img_link(page.imgs[0]),
        {"path": "A@/href", "url": "/", "text": "Home"},
        {"path": "A@/href", "url": "/gallery/", "text": "Gallery"},
        {"path": "A@/href", "url": "/about", "text": "About us"},
    ]
    for img in page.imgs[1:]:
        if img.link is not None:
            links.append({"path": "A@/href", "url": img.link})
        links.append(img_link(img))
    links += [
        {"path": "A@/href", "url": "/blog/", "text": "Blog"},
        {"path": "A@/href", "url": "/contact", "rel": "nofollow", "text": "Contact"},
    ]
    return links


def _http_response(page: Page, body: bytes, ctype: str | None = None) -> tuple[str, bytes]:
    ctype = ctype or f"text/html; charset={page.charset}"
    head = W.http_head(
        "HTTP/1.1 200 OK",
        [
            ("Date", W.http_date(page.fetch)),
            ("Server", "nginx"),
            ("Content-Type", ctype),
            ("Vary", "Accept-Encoding"),
            ("Last-Modified", W.http_date(page.fetch - timedelta(days=17))),
            ("X-Crawler-Content-Encoding", "gzip"),
            ("Content-Length", str(len(body))),
        ],
    )
    return head, head.encode("latin-1") + body


def _http_request(page: Page) -> bytes:
    p = urlsplit(page.url)
    path = p.path + (f"?{p.query}" if p.query else "")
    return W.http_head(f"GET {path} HTTP/1.1", W.ccbot_request_headers(p.netloc)).encode()


def _crawl_meta(page: Page) -> bytes:
    lang = W.languages_cld2(400 + len(page.title), "en", "eng", "ENGLISH", 0.97, 812.0)
    fields = [
        ("fetchTimeMs", str(100 + len(page.url) * 7)),
        ("charset-detected", page.charset),
        ("languages-cld2", lang),
    ]
    return W.fields_block(fields, blank_line=False).encode()


def capture_records(page: Page, ids: W.RecordIds, warcinfo_id: str, body: bytes, ctype: str | None = None):
    """The request / response / metadata WARC records CommonCrawl stores for one capture.

    Returns [(kind, record id, block, headers)] and the response's HTTP head.
    """
    req_id, resp_id, meta_id = ids(), ids(), ids()
    when = W.iso_date(page.fetch)
    req = _http_request(page)
    head, resp = _http_response(page, body, ctype)
    meta = _crawl_meta(page)
    ptype = (ctype or "text/html").split(";")[0]
    uri, ip = page.url, page.site.ip
    records = [
        ("request", req_id, req, "application/http; msgtype=request", {"payload": b"", "ip": ip}),
        (
            "response",
            resp_id,
            resp,
            "application/http; msgtype=response",
            {"payload": body, "concurrent_to": req_id, "ip": ip, "payload_type": ptype},
        ),
        ("metadata", meta_id, meta, "application/warc-fields", {"concurrent_to": resp_id}),
    ]
    out = [
        (
            kind,
            rid,
            block,
            W.capture_headers(kind, uri, when, rid, block, content_type=ct, warcinfo_id=warcinfo_id, **kw),
        )
        for kind, rid, block, ct, kw in records
    ]
    return out, head


def _head_metadata(page: Page) -> dict:
    head = {"Title": page.title}
    if page.site.base:
        head["Base"] = page.site.base
    head["Metas"] = [
        {"name": "viewport", "content": "width=device-width, initial-scale=1"},
        {"property": "og:title", "content": page.title},
    ]
    head["Link"] = [{"path": "LINK@/href", "url": "/static/css/site.css", "rel": "stylesheet"}]
    return head


def _payload_metadata(page: Page, kind: str, block: bytes, body: bytes, http_head: str) -> dict:
    length, digest = str(len(block)), W.sha1_b32(block)
    if kind == "request":
        hb = block.decode()
        method, path, version = hb.split("\r\n")[0].split(" ")
        return W.request_metadata(
            method, path, version, str(len(hb)), W.parse_head(hb), actual_length=length, block_digest=digest
        )
    if kind == "response":
        return W.response_metadata(
            "200",
            "OK",
            str(len(http_head)),
            W.parse_head(http_head),
            {"Head": _head_metadata(page), "Links": wat_links(page)},
            entity_length=str(len(body)),
            entity_digest=W.sha1_b32(body),
            actual_length=length,
            block_digest=digest,
        )
    lines = (line.partition(":") for line in block.decode().split("\r\n") if line)
    return W.fields_metadata([(k, v.strip()) for k, _, v in lines], actual_length=length, block_digest=digest)


def wat_payloads(page: Page, ids: W.RecordIds, warc_name: str, offset: int, warcinfo_id: str):
    """Three WAT JSON documents describing the page's (virtual) WARC records at `offset` of `warc_name`.

    Returns [(kind, record id, document)] and the offset after the three records.
    """
    body = render_html(page).encode(page.charset)
    records, http_head = capture_records(page, ids, warcinfo_id, body)
    out = []
    for kind, rid, block, hdr in records:
        warc_bytes = W.warc_record(hdr, block)
        member = W.gzip_member(warc_bytes)
        doc = W.wat_document(
            warc_name,
            offset,
            deflate_length=str(len(member) - 18),
            inflated_crc=W.java_crc(warc_bytes),
            inflated_length=str(len(warc_bytes)),
            payload_metadata=_payload_metadata(page, kind, block, body, http_head),
            header_length=str(len(warc_bytes) - len(block) - 4),
            header_metadata={k: v for k, v in hdr if k not in ("WARC-Payload-Digest", "WARC-Block-Digest")},
        )
        offset += len(member)
        out.append((kind, rid, doc))
    return out, offset
