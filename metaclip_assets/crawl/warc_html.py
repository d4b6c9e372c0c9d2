"""WARC HTML reader: (image URL, alt/title text) rows from the <img> tags of HTML responses.

MetaCLIP's WARC path parses every `response` record with selectolax; selectolax 1.0 dropped
the Modest backend MetaCLIP imports (`selectolax.parser.HTMLParser`), so this uses its Lexbor
backend (HTML5-conformant tree building; same attribute semantics).
Record framing (gzip members, WARC headers, offsets, skip counting) is shared with `wat.py`.

Decoding policy, decided here because real crawls are messy:
- HTTP body: Transfer-Encoding chunked is removed (malformed chunking: raw body kept, as
  browsers do); Content-Encoding gzip/deflate (and br if the optional `brotli` module is
  importable) is undone, keeping what inflates before a truncation (WARC-Truncated payloads).
  An unknown or corrupt content coding skips the record as bad_encoding. Every decoding stops
  at MAX_BODY_BYTES: a body larger than that (a decompression bomb) skips the record as too_large.
- Characters: BOM, then the HTTP Content-Type charset, then <meta charset> / http-equiv in
  the first 4 KiB, then UTF-8; each strictly. WHATWG label aliases are applied (latin-1/ascii
  mean windows-1252, gb2312/gbk mean gb18030, shift_jis means cp932, meta utf-16 means utf-8).
  If none decodes strictly, the same candidates are tried with replacement characters and the
  first one with at most 1% U+FFFD (and at most 1000) is used: a few bad bytes do not cost a
  page. Only if every candidate is worse than that does the record count as bad_encoding.
"""

from __future__ import annotations

import codecs
import re
import zlib
from pathlib import Path

import polars as pl
from selectolax.lexbor import LexborHTMLParser

from metaclip_assets.crawl.framing import header_str, iter_warc_records, warc_header
from metaclip_assets.crawl.pool import (
    PROGRESS_EVERY,
    TEXT_KEYS,
    FileRead,
    PoolColumns,
    ProgressFn,
    ReadStats,
    strip_angle,
)
from metaclip_assets.crawl.urls import UrlResolver, image_url

HTML_MIME_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_META_SNIFF_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:\-]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# WHATWG Encoding Standard labels whose Python codec of the same name is narrower than what
# browsers decode (so a strict decode would fail on pages that render fine).
_WHATWG_ALIASES = {
    "latin1": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "windows-1252": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
}
_MAX_REPLACED_SHARE = 0.01
# The largest HTTP body (after chunked and content decoding) parsed as HTML: bounds the memory of a record (the
# decoded str and the lexbor tree are several times this). CC truncates payloads at 1 MiB.
MAX_BODY_BYTES = 8 << 20
_MAX_REPLACED = 1000

try:  # optional: only needed for Content-Encoding: br, which CC never stores (it saves decoded bodies)
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None


# --- HTTP ------------------------------------------------------------------------------------


def parse_http_response(payload: bytes) -> tuple[dict[str, str], bytes] | None:
    """(headers with lower-cased names, body) of an HTTP response, or None if it is not one."""
    if not payload.startswith(b"HTTP/"):
        return None
    end, sep = payload.find(b"\r\n\r\n"), 4
    if end < 0:
        end, sep = payload.find(b"\n\n"), 2  # bare-LF servers
    if end < 0:
        end, sep = len(payload), 0
    headers: dict[str, str] = {}
    for line in payload[:end].decode("latin-1").split("\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers.setdefault(name.strip().lower(), value.strip())
    return headers, payload[end + sep :]


class TooLarge(Exception):
    """A decoded HTTP body over MAX_BODY_BYTES (reason code: too_large)."""


def dechunk(body: bytes, limit: int | None = None) -> bytes | None:
    """Remove HTTP/1.1 chunked transfer coding; None if `body` is not validly chunked. TooLarge past `limit`."""
    limit = MAX_BODY_BYTES if limit is None else limit
    out, pos, size_out = [], 0, 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(out) if out else None  # truncated capture: keep the chunks so far
        size_field = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            return None
        if size == 0:
            return b"".join(out)
        chunk = body[eol + 2 : eol + 2 + size]
        size_out += len(chunk)
        if size_out > limit:
            raise TooLarge
        out.append(chunk)
        pos = eol + 2 + size + 2


def decode_content(body: bytes, coding: str, limit: int | None = None) -> bytes | None:
    """Undo Content-Encoding; None if the coding is unknown or the data corrupt; TooLarge past `limit` bytes
    (MAX_BODY_BYTES), found without inflating more than that."""
    limit = MAX_BODY_BYTES if limit is None else limit
    coding = coding.strip().lower()
    if coding in ("", "identity", "none"):
        return body
    out = None
    if coding in ("gzip", "x-gzip", "deflate"):
        # 47 = auto-detect gzip or zlib header; some servers send raw deflate (-15)
        for wbits in (47, -15):
            try:  # all input is consumed unless the output reached limit + 1 bytes
                out = zlib.decompressobj(wbits).decompress(body, limit + 1)
                break
            except zlib.error:
                continue
    elif coding == "br" and _brotli is not None:
        try:  # the output buffer stops growing once past the limit
            out = _brotli.Decompressor().process(body, output_buffer_limit=limit + 1)
        except Exception:  # corrupt brotli data raises brotli.error
            return None
    if out is not None and len(out) > limit:
        raise TooLarge
    return out


# --- characters ------------------------------------------------------------------------------


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _WHATWG_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_html(body: bytes, http_charset: str | None) -> str | None:
    """Decode an HTML body following the policy in the module docstring; None if hopeless."""
    candidates = []
    for bom, name in _BOMS:
        if body.startswith(bom):
            candidates.append(name)
            break
    candidates.append(_codec(http_charset))
    meta = _META_CHARSET.search(body, 0, _META_SNIFF_BYTES)
    if meta:
        name = _codec(meta.group(1).decode("ascii"))
        # HTML spec: a <meta> cannot really declare UTF-16 (the bytes were read as ASCII)
        candidates.append("utf-8" if name and name.startswith("utf-16") else name)
    candidates.append("utf-8")
    ordered = list(dict.fromkeys(c for c in candidates if c))
    for name in ordered:
        try:
            return body.decode(name)
        except UnicodeDecodeError:
            continue
    for name in ordered:
        text = body.decode(name, "replace")
        bad = text.count("\ufffd")
        if bad <= _MAX_REPLACED and bad <= _MAX_REPLACED_SHARE * len(text):
            return text
    return None


def _charset_of(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, eq, value = part.partition("=")
        if eq and key.strip().lower() == "charset":
            return value.strip().strip("\"'")
    return None


# --- HTML -> rows ----------------------------------------------------------------------------


def clean_warc_text(text: str) -> str:
    """MetaCLIP's WARC cleaning: strip(), then *delete* \\n and \\r (glues words)."""
    return text.strip().replace("\n", "").replace("\r", "")


def rows_from_html(
    html: str, page_url: str, fetch_time: str | None, offset: int, cols: PoolColumns, stats: ReadStats
) -> None:
    tree = LexborHTMLParser(html)
    base = tree.css_first("base[href]")
    resolver = UrlResolver(page_url, base.attributes.get("href") if base is not None else None)
    seen = 0
    for node in tree.css("img"):
        attrs = node.attributes
        src = attrs.get("src")
        if src is None:  # not an image link (the WAT has no IMG@/src entry for these either)
            continue
        seen += 1
        url = image_url(src, resolver, stats)
        if url is None:
            continue
        n_before = len(cols)
        for key in TEXT_KEYS:
            value = attrs.get(key)
            if value is None:  # absent, or a bare attribute (<img alt>)
                continue
            text = clean_warc_text(value)
            if text:
                cols.append(url, text, key, offset, page_url, fetch_time)
        if len(cols) == n_before:
            stats.count("no_text")
    if seen:
        stats.pages_with_images += 1
        stats.images_seen += seen


def read_warc_html(
    path: Path,
    *,
    snapshot: str,
    source_name: str,
    progress: ProgressFn | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> tuple[pl.DataFrame, ReadStats]:
    """Rows from every HTML response record of a *.warc.gz file, in file order."""
    read = FileRead(progress, progress_every)
    stats, cols = read.stats, read.cols
    for offset, block, data, start, end in read.records(iter_warc_records(path, stats)):
        if (warc_header(block, b"WARC-Type") or b"").lower() != b"response":
            continue
        page_url = strip_angle(header_str(block, b"WARC-Target-URI") or "")
        if not page_url:  # a response record must name its URI
            stats.skip("bad_warc")
            continue
        http = parse_http_response(data[start:end])
        if http is None:  # dns: records and other non-HTTP responses
            stats.count("not_html")
            continue
        headers, body = http
        content_type = headers.get("content-type") or (header_str(block, b"WARC-Identified-Payload-Type") or "")
        if content_type.split(";", 1)[0].strip().lower() not in HTML_MIME_TYPES:
            stats.count("not_html")
            continue
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                dechunked = dechunk(body)
                if dechunked is not None:  # not validly chunked after all: keep the raw body
                    body = dechunked
            body = decode_content(body, headers.get("content-encoding", ""))
            if body is not None and len(body) > MAX_BODY_BYTES:
                raise TooLarge
        except TooLarge:
            stats.skip("too_large")
            continue
        html = None if body is None else decode_html(body, _charset_of(content_type))
        if html is None:
            stats.skip("bad_encoding")
            continue
        rows_from_html(html, page_url, header_str(block, b"WARC-Date"), offset, cols, stats)
    return read.finish(snapshot=snapshot, source_name=source_name, source_format="warc")
