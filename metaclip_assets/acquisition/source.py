"""What every source of image bytes returns, and the closed vocabulary of failure reasons.

The HTTP fetcher (`fetch_http.HttpImageSource`) and WARC replay (`warc_replay.WarcReplaySource`) both
implement `ImageSource.fetch(url) -> FetchResult`, so the pipeline cannot tell them apart. Reason codes
are a contract: they end up as a column of the failure table and as asset metadata, so they are a fixed
set and `FetchResult` refuses anything else (a typo would otherwise silently become a new category).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# reason code -> meaning. "ok" is the success code so that counts by reason add up to the rows.
REASONS: dict[str, str] = {
    "ok": "sample written to a shard",
    # URL / policy (decided before any byte is sent)
    "bad_url": "not an absolute http(s) URL with a host, or unparsable",
    "url_credentials": "URL carries user:password@ (never sent)",
    "blocked_address": "host resolves to a loopback/private/link-local/multicast/reserved address (SSRF guard)",
    "too_many_redirects": "redirect chain longer than the limit",
    "bad_redirect": "redirect whose Location is not a valid http(s) URL (unparsable, bad host name or port): not followed",
    "opt_out": "X-Robots-Tag opt-out (noai / noimageai) for this agent",
    "robots_disallowed": "the host's robots.txt disallows this URL for our agent (RFC 9309 rules; not fetched)",
    "robots_unreachable": "the host's robots.txt answered 5xx/429 or could not be fetched: RFC 9309 says assume "
    "complete disallow (for this run; a later run asks again)",
    "rate_limited": "the host asked us to wait (Retry-After, Crawl-delay) longer than max_wait: not fetched now",
    # network
    "dns_error": "host name did not resolve",
    "timeout": "total deadline (DNS + connect + headers + body) exceeded",
    "connection_error": "refused / reset / TLS / protocol error",
    "too_large": "body larger than the byte cap (Content-Length or while reading)",
    "truncated": "connection closed before the body was complete (shorter than Content-Length, or a cut chunked body)",
    "bad_encoding": "Content-Encoding that cannot be (safely) decoded",
    "http_4xx": "final HTTP status 4xx other than 429 (not retried)",
    "http_429": "rate limited (429) after all retries",
    "http_5xx": "server error after all retries",
    "http_other": "final status neither 200/203 nor an error (e.g. 204, 3xx without Location)",
    # archive replay
    "not_in_archive": "no WARC response record for this URL",
    "archive_error": "WARC record unreadable at its indexed offset",
    "revisit_unresolved": "WARC revisit record whose original response is not in the archive",
    # content
    "not_image": "Content-Type says the body is not an image (text/html, json, ...)",
    "empty_body": "zero-byte body",
    "decode_error": "Pillow cannot identify or decode the bytes (corrupt, truncated, unsupported format)",
    "decompression_bomb": "declared pixel count above the limit (refused before decoding)",
    "decode_memory": "decoding and resizing would need more memory than the per-image bound (8 bytes x max_pixels "
    "+ the resize): a progressive CMYK JPEG near the limit, a thin strip upscaled; refused before decoding",
    "image_too_small": "decoded image smaller than the minimum side",
    "duplicate": "identical bytes (sha256) already kept under another image in this snapshot",
    "internal_error": "unexpected exception (bug): see the failure table's detail column",
}

# Failures a later retry can plausibly fix (the network or the server changes); the rest describe the URL or
# the bytes themselves. The pipeline uses this only for reporting, `retry_failed` retries every failure.
TRANSIENT = frozenset(
    {
        "dns_error",
        "timeout",
        "connection_error",
        "truncated",
        "http_429",
        "http_5xx",
        "archive_error",
        "robots_unreachable",
        "rate_limited",
    }
)


@dataclass(frozen=True, slots=True)
class FetchResult:
    url: str  # as requested
    ok: bool
    status: int | None  # final HTTP status (None when no response was received)
    content_type: str | None
    body: bytes | None  # None unless ok
    reason_code: str  # "ok" or a key of REASONS
    elapsed: float  # seconds, all attempts and backoff included
    final_url: str | None = None  # after redirects
    attempts: int = 1
    detail: str = ""  # human-readable cause, for the failure table

    def __post_init__(self) -> None:
        if self.reason_code not in REASONS:
            raise ValueError(f"unknown reason code {self.reason_code!r}")
        if self.ok != (self.reason_code == "ok"):
            raise ValueError("ok and reason_code disagree")


@runtime_checkable
class ImageSource(Protocol):
    """Anything that turns an image URL into bytes. Must be safe to call from many threads."""

    def fetch(self, url: str) -> FetchResult: ...


def fail(
    url: str,
    reason: str,
    elapsed: float,
    *,
    status: int | None = None,
    content_type: str | None = None,
    final_url: str | None = None,
    attempts: int = 1,
    detail: str = "",
) -> FetchResult:
    return FetchResult(url, False, status, content_type, None, reason, elapsed, final_url, attempts, detail)


# Content types that announce a non-image body. Anything else (image/*, application/octet-stream, missing,
# binary/octet-stream, ...) goes to the decoder, which is the real judge: servers mislabel images often.
_NOT_IMAGE_PREFIXES = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml",
    "application/javascript",
    "application/x-javascript",
    "application/ld+json",
    "application/pdf",
    "video/",
    "audio/",
)


def is_non_image_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct.startswith(_NOT_IMAGE_PREFIXES) or ct == "image/svg+xml"  # SVG is XML: Pillow cannot rasterise it


def decode_content_encoding(body: bytes, encoding: str | None, max_bytes: int) -> bytes | None:
    """Undo gzip/deflate Content-Encoding without letting a zip bomb past the byte cap.

    Returns None when the encoding is unknown or the data is corrupt; raises OverflowError when the
    decoded size would pass `max_bytes`.
    """
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return body
    if enc not in ("gzip", "x-gzip", "deflate"):
        return None
    # wbits 47 = auto-detect zlib or gzip header; raw deflate (a common server bug) is tried second
    for wbits in (47,) if enc != "deflate" else (47, -15):
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, max_bytes + 1)
        except zlib.error:
            continue
        if len(out) > max_bytes or d.unconsumed_tail:
            raise OverflowError(f"decoded body larger than {max_bytes} bytes")
        return out
    return None
