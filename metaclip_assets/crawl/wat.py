"""Common Crawl WAT reader: (image URL, alt/title text) rows from the WAT JSON `Links`.

Framing: why not FastWARC. With the same extraction on top, a FastWARC 2.0.1 framed reader
needs ~0.8x the CPU time of this one on clean files (its inflate is faster), but measured on
damaged ones it (a) reports the first record's `stream_pos` as the second record's offset,
(b) stops silently at a gzip member cut short, dropping the last *complete* record before it,
(c) raises on the first corrupt member or bad header and cannot resume, and (d) with an
oversized Content-Length reads across member boundaries and silently swallows the following
records. Offsets and counted skips are part of the contract, so records are framed here
instead: CC writes one gzip member per record, each member is inflated on its own with zlib
(exact compressed offsets; a bad member is skipped by resyncing on the next gzip magic;
a cut member is detected), and the WARC header is parsed by hand.
JSON: orjson, after a byte pre-check for `"IMG@/src` (exact because CC's JSON writer escapes
neither '/' nor '@'; checked on a real record in the tests). `read_wat_reference` is the
plain warcio + json reader the fast path is tested against.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import polars as pl

try:  # the compiled row builder (_native/wat_rows.c), built by `pip install`; the Python path is its reference
    from metaclip_assets import _native
except ImportError:  # pragma: no cover - e.g. a source checkout that was never installed
    _native = None

from metaclip_assets.crawl.framing import header_str, iter_gzip_members, member_records, warc_header
from metaclip_assets.crawl.pool import (
    PROGRESS_EVERY,
    TEXT_KEYS,
    FileRead,
    PoolColumns,
    ProgressFn,
    ReadStats,
    has_surrogates,
    replace_surrogates,
    strip_angle,
)
from metaclip_assets.crawl.urls import UrlResolver, image_url

IMG_MARK = b'"IMG@/src'


def clean_wat_text(text: str) -> str:
    """MetaCLIP's WAT cleaning: \\n and \\r become spaces, then strip()."""
    return text.replace("\n", " ").replace("\r", " ").strip()


class _Malformed(Exception):
    """The JSON does not have the shape of a WAT metadata record (reason code: missing_field)."""


def _get_dict(parent: dict, key: str) -> dict | None:
    """parent[key] if it is a dict, None if absent; any other value means a malformed record."""
    value = parent.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _Malformed


def _image_links(doc) -> tuple[list[dict], dict, dict] | None:
    """(IMG links with a url, Envelope, HTML-Metadata), or None for a record without Links."""
    if not isinstance(doc, dict):
        raise _Malformed
    env = _get_dict(doc, "Envelope")
    if env is None:
        raise _Malformed
    node = _get_dict(env, "Payload-Metadata")
    if node is None:  # ia-web-commons writes it for every record, whatever its type
        raise _Malformed
    for key in ("HTTP-Response-Metadata", "HTML-Metadata"):
        node = _get_dict(node, key)
        if node is None:  # request, warcinfo, non-HTML response: no images, not an error
            return None
    links = node.get("Links")
    if links is None:
        return None
    if not isinstance(links, list):
        raise _Malformed
    try:  # one pass over all links (~40 per page); a link that is not a dict raises here
        images = [link for link in links if link.get("path", "")[:8] == "IMG@/src" and link.get("url") is not None]
    except (AttributeError, TypeError):  # link not a dict, or a non-string path
        raise _Malformed from None
    return images, env, node


def page_context(
    stats: ReadStats, target: object, date: object, base: object, n_images: int, uri_header, date_header
) -> tuple[str, str | None, UrlResolver] | None:
    """(page URL, fetch time, resolver) of a record with `n_images` image links, or None if it is skipped.

    `target`/`date` are the envelope's WARC-Target-URI / WARC-Date values (falling back to the WAT
    record's own headers), `base` the Head's Base. Shared by the Python and the compiled row builders.
    """
    page_url = target or uri_header
    # the envelope's WARC-Date is the capture time; the WAT record's own date is extraction time
    fetch_time = date or date_header
    if not isinstance(page_url, str) or not page_url.strip() or not isinstance(fetch_time, (str, type(None))):
        stats.skip("missing_field")
        return None
    base = base if isinstance(base, str) else None
    # Lone surrogates (a JSON \udXXX escape) cannot be written out: every image URL is resolved against the page URL
    # and <base href>, so such a page is skipped; the date is only carried along, so it is repaired (U+FFFD), as the
    # WARC header's own values are when their bytes are not UTF-8.
    if has_surrogates(page_url) or (base is not None and has_surrogates(base)):
        stats.skip("bad_encoding")
        return None
    if fetch_time is not None and has_surrogates(fetch_time):
        fetch_time = replace_surrogates(fetch_time)
    page_url = strip_angle(page_url)
    resolver = UrlResolver(page_url, base)
    stats.pages_with_images += 1
    stats.images_seen += n_images
    return page_url, fetch_time, resolver


def rows_from_wat_json(
    doc, uri_header: str | None, date_header: str | None, offset: int, cols: PoolColumns, stats: ReadStats
) -> None:
    """Append the rows of one parsed WAT payload to `cols` (the reference reader's and the fallback path).

    Request/warcinfo/non-HTML records simply have no Links: not an error. A record is skipped
    whole (missing_field) when its JSON does not have the shape of a WAT record, its Links are
    malformed or it has images but no page URL; a bad single link only costs that link.
    """
    try:
        found = _image_links(doc)
        if found is None or not found[0]:
            return
        images, env, html = found
        warc_md = _get_dict(env, "WARC-Header-Metadata") or {}
        head = _get_dict(html, "Head") or {}
    except _Malformed:
        stats.skip("missing_field")
        return
    page = page_context(
        stats,
        warc_md.get("WARC-Target-URI"),
        warc_md.get("WARC-Date"),
        head.get("Base"),
        len(images),
        uri_header,
        date_header,
    )
    if page is None:
        return
    page_url, fetch_time, resolver = page
    for link in images:
        src = link["url"]
        if not isinstance(src, str) or has_surrogates(src):
            stats.skip("bad_url")
            continue
        url = image_url(src, resolver, stats)
        if url is None:
            continue
        added = False
        for key in TEXT_KEYS:
            value = link.get(key)
            if not isinstance(value, str):
                continue
            text = value.replace("\n", " ").replace("\r", " ").strip()  # = clean_wat_text, inlined
            if not text:
                continue
            if has_surrogates(text):
                stats.skip("bad_encoding")
                continue
            cols.append(url, text, key, offset, page_url, fetch_time)
            added = True
        if not added:
            stats.count("no_text")


def _json_int(digits: str) -> int | float:
    """JSON integers of any length are valid (RFC 8259) and no row reads one: past int()'s digit limit
    (sys.get_int_max_str_digits(), 4,300 by default) a float (+-inf) stands in, so that such a record reads
    as _native's scanner reads it instead of failing as bad_json."""
    return int(digits) if len(digits) < 4000 else float(digits)


def _parse_json_slow(payload) -> tuple[object, str | None]:
    """Stdlib json, as the reference reader parses: (doc, None) or (None, skip reason)."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return None, "bad_encoding"
    try:
        return json.loads(text, parse_int=_json_int), None
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting recurses
        return None, "bad_json"


def _looks_broken(data: bytes, start: int, end: int) -> bool:
    """Byte-level hint that an image-less WAT payload is malformed (then it is parsed in full).

    Every ia-web-commons record is one JSON object with Envelope.Payload-Metadata, so a payload
    not ending in '}' or without that key cannot be valid; a missing hint costs nothing but
    the count (such a record yields no rows either way).
    """
    return (
        not data[max(start, end - 16) : end].rstrip().endswith(b"}") or data.find(b'"Payload-Metadata"', start, end) < 0
    )


def read_wat(
    path: Path,
    *,
    snapshot: str,
    source_name: str,
    progress: ProgressFn | None = None,
    progress_every: int = PROGRESS_EVERY,
    compiled: bool | None = None,
) -> tuple[pl.DataFrame, ReadStats]:
    """Fast WAT reader: own framing + pre-check + the compiled row builder (or orjson). Rows in file order.

    `compiled`: None uses _native when it is built; False forces the Python rows (orjson + rows_from_wat_json),
    which _native must match exactly and which it falls back to for payloads outside its shape.
    """
    if compiled is None:
        compiled = _native is not None
    elif compiled and _native is None:
        raise RuntimeError("metaclip_assets._native is not built: run `pip install -e .` (scripts/setup.sh)")
    read = FileRead(progress, progress_every)
    stats, cols = read.stats, read.cols  # locals: the loop below runs ~150k times per CC file

    def page_cb(target, date, base, n_images, block):
        # the record's own headers are only read when the envelope lacks the value (page_context's `or`)
        page = page_context(
            stats,
            target,
            date,
            base,
            n_images,
            None if target else header_str(block, b"WARC-Target-URI"),
            None if date else header_str(block, b"WARC-Date"),
        )
        if page is None:
            return None
        page_url, fetch_time, resolver = page
        return page_url, fetch_time, resolver.resolve, resolver.shortcut_parts()

    def make_resolver(page_url: str):  # for the pages _native takes itself: sources its shortcuts do not cover
        return UrlResolver(page_url).resolve

    def add_counts(counts: tuple[int, int, int, int, int, int]) -> None:
        no_src, data_uri, bad_url, no_text, pages, images = counts
        if pages:
            stats.pages_with_images += pages
            stats.images_seen += images
        if no_src:
            stats.count("no_src", no_src)
        if data_uri:
            stats.count("data_uri", data_uri)
        if bad_url:
            stats.skip("bad_url", bad_url)
        if no_text:
            stats.count("no_text", no_text)

    def record(offset: int, block: bytes, data: bytes, start: int, end: int) -> None:
        if (warc_header(block, b"WARC-Type") or b"").lower() != b"metadata":
            return
        # Records without an IMG link cannot yield rows: skip their JSON parse (~2/3 of CC
        # records), unless cheap byte checks hint at the usual defects (a cut-off payload, an
        # envelope without Payload-Metadata), which the full parse then counts as the reference does.
        if data.find(IMG_MARK, start, end) < 0:
            if not _looks_broken(data, start, end):
                return
        elif compiled:
            counts = _native.rows(data, start, end, block, offset, page_cb, make_resolver, cols)
            if counts is not None:  # else: outside the compiled path's shape, parsed below
                add_counts(counts)
                return
        payload = memoryview(data)[start:end]
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # orjson is stricter than json (lone surrogate escapes, NaN): decide as the reference does
            doc, reason = _parse_json_slow(payload)
            if reason:
                stats.skip(reason)
                return
        rows_from_wat_json(
            doc, header_str(block, b"WARC-Target-URI"), header_str(block, b"WARC-Date"), offset, cols, stats
        )

    # One call per gzip member: _native.member does a member in CC's layout (one record) whole;
    # anything else goes through the Python framing and `record`.
    member = _native.member if compiled else None
    for offset, data in read.records(iter_gzip_members(path, stats)):
        if member is not None:
            counts = member(data, offset, page_cb, make_resolver, cols)
            if counts is not None:
                stats.records_read += 1
                add_counts(counts)
                continue
        for rec in member_records(offset, data, stats):
            record(*rec)
    return read.finish(snapshot=snapshot, source_name=source_name, source_format="wat")


def read_wat_reference(path: Path, *, snapshot: str, source_name: str) -> tuple[pl.DataFrame, ReadStats]:
    """Plain warcio + json reader, every record parsed: the fast reader must give identical rows.

    Meant for valid files (tests, spot checks): a framing error from warcio ends the file and
    is counted as bad_warc, without the fast reader's finer classification.
    """
    from warcio.archiveiterator import ArchiveIterator

    read = FileRead()
    stats, cols = read.stats, read.cols
    with open(path, "rb") as f:
        it = ArchiveIterator(f)
        try:
            for record in it:
                stats.records_read += 1
                if record.rec_type != "metadata":
                    continue
                payload = record.content_stream().read()
                offset = it.get_record_offset()  # after reading: warcio consumes the record here
                doc, reason = _parse_json_slow(payload)
                if reason:
                    stats.skip(reason)
                    continue
                h = record.rec_headers
                rows_from_wat_json(doc, h.get_header("WARC-Target-URI"), h.get_header("WARC-Date"), offset, cols, stats)
        except Exception:  # warcio raises assorted types (ArchiveLoadFailed, zlib.error, EOFError)
            stats.skip("bad_warc")
    return read.finish(snapshot=snapshot, source_name=source_name, source_format="wat")
