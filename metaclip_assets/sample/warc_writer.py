"""The one WAT/WARC writer: the sample generator, bench/gen_wat.py and the tests all write crawl files with it.

Byte-reproducible and in CommonCrawl's layout: one gzip member per record (fixed header: mtime 0, OS 3), WARC/1.0
framing with CRLF header lines and CRLF CRLF after the block, sha1 digests in base32 as CC writes them, record ids
derived from a name instead of drawn at random, WAT JSON compact UTF-8 with '/' and '@' unescaped (CC's writer).
Header orders follow CC's files: WAT records, WAT warcinfo, and the WARC's capture records each have their own.

Knows nothing of pages or of how files are read; must not import `defs`, Dagster or the readers in `crawl`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
import zlib
from datetime import datetime
from pathlib import Path

# What zlib's gzip wrapper writes at level 6 on Unix (XFL 0, OS 3), with mtime 0 so bytes depend only on the data.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


# --------------------------------------------------------------------------------------------------------------
# Bytes: gzip members, digests, dates, ids, JSON
# --------------------------------------------------------------------------------------------------------------
def gzip_member(data: bytes) -> bytes:
    """`data` as one gzip member (deflate level 6), the same bytes as zlib.compressobj(6, wbits=31)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = comp.compress(data) + comp.flush()
    return GZIP_HEADER + body + struct.pack("<II", zlib.crc32(data), len(data))


def sha1_b32(data: bytes) -> str:
    """WARC digest `sha1:<base32>`."""
    # Same result as base64.b32encode (160 bits = 32 symbols, no padding), ~5x faster: ~20k digests per sample.
    n = int.from_bytes(hashlib.sha1(data).digest(), "big")
    return "sha1:" + "".join(_B32[(n >> shift) & 31] for shift in range(155, -1, -5))


def java_crc(data: bytes) -> str:
    """CRC-32 as the WAT's Inflated-CRC shows it: Java prints it as a signed int."""
    crc = zlib.crc32(data)
    return str(crc - (1 << 32) if crc >= 1 << 31 else crc)


def iso_date(t: datetime) -> str:
    """WARC-Date."""
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(t: datetime) -> str:
    """HTTP Date / Last-Modified header value."""
    return t.strftime("%a, %d %b %Y %H:%M:%S GMT")


def urn_uuid(bits: int) -> str:
    """A WARC-Record-ID from 128 bits."""
    return f"<urn:uuid:{uuid.UUID(int=bits, version=4)}>"


class RecordIds:
    """Reproducible WARC-Record-IDs: the n-th call hashes `namespace/n`, so equal runs give equal files."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        digest = hashlib.blake2b(f"{self.namespace}/{self.count}".encode(), digest_size=16).digest()
        return urn_uuid(int.from_bytes(digest, "big"))


def json_text(obj) -> str:
    """JSON as CommonCrawl's writer writes it: no spaces, '/', '@' and non-ASCII left unescaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------------------------
# Header blocks: WARC fields, HTTP messages
# --------------------------------------------------------------------------------------------------------------
def fields_block(fields: list[tuple[str, str]], *, blank_line: bool = True) -> str:
    """`Name: value` CRLF lines (application/warc-fields, HTTP headers), closed by an empty line by default."""
    return "".join(f"{k}: {v}\r\n" for k, v in fields) + ("\r\n" if blank_line else "")


def http_head(start_line: str, fields: list[tuple[str, str]]) -> str:
    """An HTTP request or response head: start line, header lines, empty line."""
    return f"{start_line}\r\n" + fields_block(fields)


def ccbot_request_headers(host: str) -> list[tuple[str, str]]:
    """The request headers CommonCrawl's crawler sends."""
    return [
        ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "br,gzip"),
        ("Host", host),
        ("Connection", "Keep-Alive"),
    ]


def languages_cld2(text_bytes: int, code: str, code3: str, name: str, covered: float, score: float) -> str:
    """The `languages-cld2` value of CC's crawl metadata record: one detected language."""
    lang = {"code": code, "code-iso-639-3": code3, "text-covered": covered, "score": score, "name": name}
    return json_text({"reliable": True, "text-bytes": text_bytes, "languages": [lang]})


def parse_head(head: str) -> dict[str, str]:
    """The header fields of an HTTP head (start line skipped), as the WAT's Headers object lists them."""
    out: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        if line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------------------------------------------
# WARC records
# --------------------------------------------------------------------------------------------------------------
def warc_record(headers: list[tuple[str, str]], block: bytes) -> bytes:
    """One uncompressed WARC/1.0 record: version line, headers in the given order, block, CRLF CRLF."""
    head = "WARC/1.0\r\n" + fields_block(headers)
    return head.encode("utf-8") + block + b"\r\n\r\n"


def warc_member(headers: list[tuple[str, str]], block: bytes) -> bytes:
    """One WARC record as one gzip member, as CC stores every record."""
    return gzip_member(warc_record(headers, block))


def warcinfo_member(filename: str, date: str, record_id: str, fields: list[tuple[str, str]], *, wat: bool) -> bytes:
    """A warcinfo record whose block is `fields` (application/warc-fields), as one gzip member."""
    block = fields_block(fields).encode()
    return warc_member(warcinfo_headers(filename, date, record_id, block, wat=wat), block)


def warcinfo_headers(filename: str, date: str, record_id: str, block: bytes, *, wat: bool) -> list[tuple[str, str]]:
    """warcinfo headers in the order CC's WAT files (`wat=True`) or its WARC files write them."""
    digest = ("WARC-Block-Digest", sha1_b32(block))
    if wat:
        return [
            ("WARC-Type", "warcinfo"),
            ("WARC-Date", date),
            ("WARC-Filename", filename),
            ("WARC-Record-ID", record_id),
            ("Content-Type", "application/warc-fields"),
            ("Content-Length", str(len(block))),
            digest,
        ]
    return [
        ("WARC-Type", "warcinfo"),
        ("WARC-Date", date),
        ("WARC-Record-ID", record_id),
        ("Content-Length", str(len(block))),
        ("Content-Type", "application/warc-fields"),
        ("WARC-Filename", filename),
        digest,
    ]


def capture_headers(
    warc_type: str,
    uri: str,
    date: str,
    record_id: str,
    block: bytes,
    *,
    content_type: str,
    payload: bytes | None = None,
    warcinfo_id: str | None = None,
    concurrent_to: str | None = None,
    ip: str | None = None,
    payload_type: str | None = None,
) -> list[tuple[str, str]]:
    """Headers of a WARC capture record (request / response / metadata) in CC's order; None fields are left out.

    `payload` is what WARC-Payload-Digest covers (the HTTP entity; the whole block when None).
    """
    headers = [
        ("WARC-Type", warc_type),
        ("WARC-Date", date),
        ("WARC-Record-ID", record_id),
        ("Content-Length", str(len(block))),
        ("Content-Type", content_type),
        ("WARC-Warcinfo-ID", warcinfo_id),
        ("WARC-Concurrent-To", concurrent_to),
        ("WARC-IP-Address", ip),
        ("WARC-Target-URI", uri),
        ("WARC-Payload-Digest", sha1_b32(block if payload is None else payload)),
        ("WARC-Block-Digest", sha1_b32(block)),
        ("WARC-Identified-Payload-Type", payload_type),
    ]
    return [(k, v) for k, v in headers if v is not None]


def wat_headers(uri: str | None, date: str, record_id: str, refers_to: str, payload: bytes) -> list[tuple[str, str]]:
    """Headers of one WAT `metadata` record: a JSON payload describing the WARC record `refers_to`.

    `uri` None leaves WARC-Target-URI out (tests of readers that must cope without it).
    """
    digest = sha1_b32(payload)
    headers = [
        ("WARC-Type", "metadata"),
        ("WARC-Target-URI", uri),
        ("WARC-Date", date),
        ("WARC-Record-ID", record_id),
        ("WARC-Refers-To", refers_to),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("WARC-Payload-Digest", digest),
        ("WARC-Block-Digest", digest),
    ]
    return [(k, v) for k, v in headers if v is not None]


def wat_member(uri: str | None, date: str, record_id: str, refers_to: str, payload: bytes) -> bytes:
    """One WAT record as one gzip member."""
    return warc_member(wat_headers(uri, date, record_id, refers_to, payload), payload)


# --------------------------------------------------------------------------------------------------------------
# WAT JSON documents (ia-web-commons' key order; every number is written as a string, as CC's files have them)
# --------------------------------------------------------------------------------------------------------------
def wat_document(
    filename: str,
    offset: int,
    *,
    deflate_length: str,
    inflated_crc: str,
    inflated_length: str,
    payload_metadata: dict,
    header_length: str,
    header_metadata: dict,
) -> dict:
    """The payload of one WAT record: where the WARC record is (Container) and what it holds (Envelope)."""
    return {
        "Container": {
            "Filename": filename,
            "Compressed": True,
            "Offset": str(offset),
            "Gzip-Metadata": {
                "Deflate-Length": deflate_length,
                "Header-Length": "10",
                "Footer-Length": "8",
                "Inflated-CRC": inflated_crc,
                "Inflated-Length": inflated_length,
            },
        },
        "Envelope": {
            "Payload-Metadata": payload_metadata,
            "Format": "WARC/1.0",
            "WARC-Header-Length": header_length,
            "WARC-Header-Metadata": header_metadata,
        },
    }


def _payload_metadata(content_type: str, key: str, value: dict, length: str, slop: str, digest: str | None) -> dict:
    pm = {
        "Actual-Content-Type": content_type,
        key: value,
        "Actual-Content-Length": length,
        "Trailing-Slop-Length": slop,
    }
    if digest is not None:
        pm["Block-Digest"] = digest
    return pm


def request_metadata(
    method: str,
    path: str,
    version: str,
    headers_length: str,
    headers: dict,
    *,
    actual_length: str,
    block_digest: str,
) -> dict:
    """Payload-Metadata of a WARC request record."""
    http = {
        "Request-Message": {"Method": method, "Path": path, "Version": version},
        "Headers-Length": headers_length,
        "Headers": headers,
        "Entity-Length": "0",
        "Entity-Digest": sha1_b32(b""),
        "Entity-Trailing-Slop-Length": "0",
    }
    kind = "application/http; msgtype=request"
    return _payload_metadata(kind, "HTTP-Request-Metadata", http, actual_length, "4", block_digest)


def response_metadata(
    status: str,
    reason: str,
    headers_length: str,
    headers: dict,
    html: dict | None,
    *,
    entity_length: str,
    entity_digest: str,
    actual_length: str,
    block_digest: str,
) -> dict:
    """Payload-Metadata of a WARC response record; `html` is HTML-Metadata ({"Head", "Links"}), None if not HTML."""
    http = {
        "Response-Message": {"Version": "HTTP/1.1", "Status": status, "Reason": reason},
        "Headers-Length": headers_length,
        "Headers": headers,
    }
    if html is not None:
        http["HTML-Metadata"] = html
    http.update({"Entity-Length": entity_length, "Entity-Digest": entity_digest, "Entity-Trailing-Slop-Length": "0"})
    kind = "application/http; msgtype=response"
    return _payload_metadata(kind, "HTTP-Response-Metadata", http, actual_length, "4", block_digest)


def fields_metadata(records: list[tuple[str, str]], *, actual_length: str, block_digest: str | None = None) -> dict:
    """Payload-Metadata of a WARC metadata record (the crawl's application/warc-fields)."""
    fields = {"Metadata-Records": [{"Name": k, "Value": v} for k, v in records]}
    kind = "application/metadata-fields"
    return _payload_metadata(kind, "WARC-Metadata-Metadata", fields, actual_length, "0", block_digest)


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------
def write_members(path: Path, members: list[bytes]) -> list[int]:
    """Write members back to back; return each member's offset."""
    offsets, pos = [], 0
    for m in members:
        offsets.append(pos)
        pos += len(m)
    Path(path).write_bytes(b"".join(members))
    return offsets


class MemberWriter:
    """Streams records to a file, one gzip member each; counts records and uncompressed bytes (large files)."""

    def __init__(self, path: Path):
        self.f = open(path, "wb")
        self.raw = 0
        self.records = 0

    def record(self, headers: list[tuple[str, str]], block: bytes) -> None:
        data = warc_record(headers, block)
        self.f.write(gzip_member(data))
        self.raw += len(data)
        self.records += 1

    def close(self) -> None:
        self.f.close()
