"""Image bytes replayed from WARC files: the offline `ImageSource`.

One pass over the files builds an index (target URL -> file, offset of the record's gzip member); a fetch
seeks there and parses that single record, so replay costs one small gzip member per image however big
the archive is. The archive is treated like the web: the recorded HTTP status and Content-Type count
(a 404 stays a 404, a 302 is followed inside the archive), and `revisit` records (deduplicated captures)
are resolved to the response they point at, by payload digest first, then by their Refers-To URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import polars as pl
from fastwarc.warc import ArchiveIterator, WarcRecordType

from metaclip_assets.acquisition.source import FetchResult, decode_content_encoding, fail, is_non_image_type

_TYPES = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.revisit
INDEX_SCHEMA = {
    "url": pl.Utf8,
    "path": pl.Utf8,
    "offset": pl.Int64,
    "kind": pl.Utf8,
    "status": pl.Int32,
    "content_type": pl.Utf8,
    "location": pl.Utf8,
    "payload_digest": pl.Utf8,
    "refers_to": pl.Utf8,
}


@dataclass(frozen=True, slots=True)
class WarcLocation:
    url: str
    path: str
    offset: int  # of the record's gzip member (or of the record in an uncompressed file)
    kind: str  # response | resource | revisit
    status: int | None  # recorded HTTP status; None for resource records (no HTTP)
    content_type: str | None
    location: str | None  # Location header of a recorded redirect
    payload_digest: str | None
    refers_to: str | None  # revisit: WARC-Refers-To-Target-URI

    def rank(self) -> int:
        """Which capture of a URL to serve when there are several: real 200 bodies first, errors last."""
        ok = self.status in (None, 200, 203)
        if ok and self.kind != "revisit":
            return 0
        if ok:
            return 1
        return 2 if self.location else 3


def canonical_url(url: str) -> str:
    """Lookup key tolerant of how HTML and crawlers spell the same URL (case of host, default port,
    fragment, percent-encoding of safe characters)."""
    try:
        p = urlsplit(url.strip())
        host = (p.hostname or "").lower()
        port = p.port
    except ValueError:
        return url
    scheme = p.scheme.lower()
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    path = quote(unquote(p.path or "/"), safe="/:@!$&'()*+,;=-._~")
    query = quote(unquote(p.query), safe="/:@!$&'()*+,;=-._~?")
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if p.query else "")


def _strip_angle(uri: str) -> str:
    return uri[1:-1] if uri.startswith("<") and uri.endswith(">") else uri  # WARC 1.1 writers (wget) wrap URIs


def scan_warc(path: str | Path) -> list[WarcLocation]:
    """Every response/resource/revisit record with an http(s) target in one file, in file order."""
    out: list[WarcLocation] = []
    for rec in ArchiveIterator(str(path), record_types=_TYPES, parse_http=True, fsspec_args=False):
        url = _strip_angle(rec.headers.get("WARC-Target-URI") or "")
        if not url.startswith(("http://", "https://")):
            continue  # dns:, whois:, metadata about the crawl
        h = rec.http_headers
        if h is not None:
            status, ctype, location = h.status_code, h.get("Content-Type"), h.get("Location")
        else:
            status, ctype, location = None, rec.headers.get("Content-Type"), None
        refers = rec.headers.get("WARC-Refers-To-Target-URI")
        out.append(
            WarcLocation(
                url,
                str(path),
                rec.stream_pos,
                str(rec.record_type),
                status,
                ctype,
                location,
                rec.headers.get("WARC-Payload-Digest"),
                _strip_angle(refers) if refers else None,
            )
        )
    return out


class WarcReplaySource:
    """`ImageSource` over WARC files. Thread-safe: each fetch opens its own file handle."""

    def __init__(
        self, locations: Iterable[WarcLocation], *, max_bytes: int = 16 * 1024 * 1024, max_redirects: int = 5
    ) -> None:
        self.max_bytes, self.max_redirects = max_bytes, max_redirects
        self._by_url: dict[str, WarcLocation] = {}
        self._by_digest: dict[str, WarcLocation] = {}
        for loc in locations:
            for key in {loc.url, canonical_url(loc.url)}:
                best = self._by_url.get(key)
                if best is None or loc.rank() < best.rank():  # first of equal rank wins: stable across runs
                    self._by_url[key] = loc
            if loc.kind != "revisit" and loc.status in (None, 200, 203) and loc.payload_digest:
                self._by_digest.setdefault(loc.payload_digest, loc)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], **kwargs: int) -> WarcReplaySource:
        return cls((loc for p in sorted(map(str, paths)) for loc in scan_warc(p)), **kwargs)

    @classmethod
    def from_index(cls, frame: pl.DataFrame, **kwargs: int) -> WarcReplaySource:
        """Rebuild from `index_frame()` output (e.g. a cached parquet) without re-reading the archives."""
        return cls((WarcLocation(**row) for row in frame.iter_rows(named=True)), **kwargs)

    def index_frame(self) -> pl.DataFrame:
        locs = {id(v): v for v in self._by_url.values()}.values()
        rows = [{f: getattr(loc, f) for f in INDEX_SCHEMA} for loc in locs]
        return pl.DataFrame(rows, schema=INDEX_SCHEMA).sort("path", "offset")

    def lookup(self, url: str) -> WarcLocation | None:
        return self._by_url.get(url) or self._by_url.get(canonical_url(url))

    def __len__(self) -> int:
        return len({id(v) for v in self._by_url.values()})

    def fetch(self, url: str) -> FetchResult:
        start = time.monotonic()
        current = url
        for _hop in range(self.max_redirects + 1):
            loc = self.lookup(current)
            if loc is None:
                return fail(url, "not_in_archive", time.monotonic() - start, final_url=current)
            if loc.kind == "revisit":
                original = self._by_digest.get(loc.payload_digest or "") or (
                    self.lookup(loc.refers_to) if loc.refers_to else None
                )
                if original is None or original.kind == "revisit":
                    return fail(
                        url,
                        "revisit_unresolved",
                        time.monotonic() - start,
                        status=loc.status,
                        final_url=current,
                        detail=f"revisit of {loc.refers_to or loc.payload_digest}",
                    )
                loc = original
            status = 200 if loc.status is None else loc.status
            if status in (301, 302, 303, 307, 308) and loc.location:
                current = urljoin(current, loc.location.strip()).split("#", 1)[0]
                continue
            if status not in (200, 203):
                reason = (
                    "http_4xx"
                    if 400 <= status < 500 and status != 429
                    else ("http_429" if status == 429 else "http_5xx" if status >= 500 else "http_other")
                )
                return fail(
                    url,
                    reason,
                    time.monotonic() - start,
                    status=status,
                    content_type=loc.content_type,
                    final_url=current,
                    detail=f"recorded HTTP {status}",
                )
            if is_non_image_type(loc.content_type):
                return fail(
                    url,
                    "not_image",
                    time.monotonic() - start,
                    status=status,
                    content_type=loc.content_type,
                    final_url=current,
                    detail=f"Content-Type {loc.content_type}",
                )
            return self._read(url, current, loc, status, start)
        return fail(url, "too_many_redirects", time.monotonic() - start, final_url=current)

    def _read(self, url: str, current: str, loc: WarcLocation, status: int, start: float) -> FetchResult:
        def failed(reason: str, detail: str) -> FetchResult:
            return fail(url, reason, time.monotonic() - start, status=status, final_url=current, detail=detail)

        try:
            with open(loc.path, "rb") as f:
                f.seek(loc.offset)
                # transfer decoding only: Content-Encoding is undone below under the byte cap
                rec = next(
                    iter(
                        ArchiveIterator(f, parse_http=loc.kind != "resource", auto_decode="transfer", fsspec_args=False)
                    )
                )
                if _strip_angle(rec.headers.get("WARC-Target-URI") or "") != loc.url:
                    raise OSError(f"record at {loc.offset} is not {loc.url} (index out of date?)")
                body = rec.reader.read(self.max_bytes + 1)
                encoding = rec.http_headers.get("Content-Encoding") if rec.http_headers is not None else None
        except (OSError, StopIteration, ValueError) as e:
            return failed("archive_error", f"{loc.path}@{loc.offset}: {type(e).__name__}: {e}")
        if len(body) > self.max_bytes:
            return failed("too_large", f"payload passed {self.max_bytes} bytes")
        try:
            decoded = decode_content_encoding(body, encoding, self.max_bytes)
        except OverflowError as e:
            return failed("too_large", str(e))
        if decoded is None:
            return failed("bad_encoding", f"Content-Encoding {encoding}")
        return FetchResult(url, True, status, loc.content_type, decoded, "ok", time.monotonic() - start, current)
