"""gzip member and WARC record framing, shared by the WAT and WARC HTML readers.

Why not FastWARC: see `wat.py`. CC writes one gzip member per record; each member is inflated on its own (exact
compressed offsets; a bad member is skipped by resyncing on the next gzip magic; a cut member is detected), and the
WARC header is parsed by hand.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

try:  # ISA-L inflates ~2x faster than zlib (bench/README.md); same API, so zlib is the fallback
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal is a declared dependency
    _inflate = zlib

from metaclip_assets.crawl.pool import ReadStats

_GZIP_MAGIC = b"\x1f\x8b\x08"
# The most one gzip member (one WARC record in CC's layout) may inflate to; a larger one is skipped as too_large, so
# a reader holds at most this much of a record. CC caps WARC payloads at 1 MiB and its WAT records are far smaller.
MAX_MEMBER_BYTES = 32 << 20
# A gzip header's optional name, comment and extra field: what a member's compressed span may add to its data.
_MAX_HEADER_BYTES = 1 << 20
_READ_SIZE = 1 << 20
# Bytes fed to zlib per call. zlib copies everything after the member end into unused_data, so
# feeding much more than a typical member (~2 KB compressed in a WAT) costs a copy per record.
_FEED_SIZE = 8192


class BadRecord(Exception):
    """A gzip member whose content is not a valid WARC record (reason code: bad_warc)."""


# --- gzip members ----------------------------------------------------------------------------


def _find_magic(f, start: int) -> int:
    """Offset of the next gzip member header at or after `start`, or -1."""
    f.seek(start)
    pos, tail = start, b""
    while block := f.read(_READ_SIZE):
        hit = (tail + block).find(_GZIP_MAGIC)
        if hit >= 0:
            return pos - len(tail) + hit
        tail = block[-(len(_GZIP_MAGIC) - 1) :]
        pos += len(block)
    return -1


def _next_block(f, buf: bytes, base: int) -> tuple[bytes, memoryview, int, int]:
    """The read block after `buf` (which starts at file offset `base`): (block, its view, position 0, its offset)."""
    base += len(buf)
    buf = f.read(_READ_SIZE)
    return buf, memoryview(buf), 0, base


def _member_header_at(f, offset: int) -> bool:
    """Whether a gzip member header plausibly starts at `offset` (magic, deflate, no reserved flag bits): a real
    member boundary inside a damaged region, not a chance magic inside compressed or random bytes (1 in 8 of those)."""
    f.seek(offset)
    head = f.read(4)
    return len(head) == 4 and head.startswith(_GZIP_MAGIC) and not head[3] & 0xE0


def iter_gzip_members(path: Path, stats: ReadStats) -> Iterator[tuple[int, bytes]]:
    """Yield (compressed offset, inflated bytes) per gzip member.

    A member that cannot be read is skipped by resynchronising on the next gzip magic after its start, and the
    bytes up to the next member that reads are lost (counted in `stats.bytes_skipped` under the reason):
    - bad_gzip: a zlib error (corrupt data, CRC mismatch), non-gzip bytes, or a member that spans more than
      _MAX_MEMBER_SPAN compressed bytes; counted once per contiguous unreadable region, plus once per further
      damaged member header in it;
    - truncated_gzip: the file ends inside the member and no later member reads (a damaged member that runs on
      to the end of the file while intact members follow it counts as bad_gzip, and those members are read);
    - too_large: it inflates to more than MAX_MEMBER_BYTES (memory per record is bounded by that).
    """
    cap = MAX_MEMBER_BYTES
    span_cap = cap + (cap >> 10) + _MAX_HEADER_BYTES
    with open(path, "rb") as f:
        buf = f.read(_READ_SIZE)
        mv, pos, base = memoryview(buf), 0, 0  # buf[0] is at file offset `base`
        lost_at, lost_reason = -1, ""  # the unreadable region being skipped: its first offset, its first failure
        while True:
            if pos >= len(buf):
                buf, mv, pos, base = _next_block(f, buf, base)
                if not buf:
                    break
            start = base + pos
            d = _inflate.decompressobj(31)
            parts = []
            size = 0
            failure = None
            # RFC 1952: reserved FLG bits set must be an error; ISA-L's inflate ignores them, zlib refuses them.
            flags = buf[pos + 3] if pos + 3 < len(buf) else (os.pread(f.fileno(), 4, start)[3:4] or b"\0")[0]
            try:
                if flags & 0xE0:
                    raise zlib.error("reserved gzip header flags set")
                while True:
                    if pos >= len(buf):
                        buf, mv, pos, base = _next_block(f, buf, base)
                        if not buf:
                            failure = "truncated_gzip"
                            break
                    piece = mv[pos : pos + _FEED_SIZE]
                    out = d.decompress(piece)  # at most ~8 MiB per 8 KiB piece (deflate's 1032:1)
                    size += len(out)
                    if size > cap:
                        failure = "too_large"
                        break
                    parts.append(out)
                    if d.eof:
                        pos += len(piece) - len(d.unused_data)
                        break
                    pos += len(piece)
                    if base + pos - start > span_cap:
                        failure = "bad_gzip"
                        break
            except (zlib.error, _inflate.error):
                failure = "bad_gzip"
            if failure is None:
                if lost_at >= 0:  # a member that ran on to the end past intact ones was damaged, not truncated
                    truncated = lost_reason == "truncated_gzip"
                    _lost(stats, "bad_gzip" if truncated else lost_reason, start - lost_at, truncated)
                    lost_at = -1
                yield start, parts[0] if len(parts) == 1 else b"".join(parts)
                continue
            parts = None
            if lost_at < 0:
                lost_at, lost_reason = start, failure
                if failure != "truncated_gzip":  # decided once we know whether an intact member follows
                    stats.skip(failure)
            elif failure == "too_large" or _member_header_at(f, start):
                stats.skip("bad_gzip" if failure == "truncated_gzip" else failure)
            nxt = _find_magic(f, start + 1)
            if nxt < 0:
                break
            f.seek(nxt)
            base, buf = nxt, f.read(_READ_SIZE)
            mv, pos = memoryview(buf), 0
        if lost_at >= 0:
            _lost(stats, lost_reason, os.fstat(f.fileno()).st_size - lost_at, lost_reason == "truncated_gzip")


def _lost(stats: ReadStats, reason: str, nbytes: int, uncounted: bool) -> None:
    """Close an unreadable region: its bytes under `reason`, and the record itself if not counted yet."""
    if uncounted:
        stats.skip(reason)
    stats.bytes_skipped[reason] = stats.bytes_skipped.get(reason, 0) + nbytes


# --- WARC records ----------------------------------------------------------------------------


def warc_header(block: bytes, name: bytes) -> bytes | None:
    """Value of header `name` (canonical case, e.g. b"WARC-Type") in a WARC header block.

    A targeted find instead of a parse of every line: about 10x cheaper per record, which
    matters at ~150k records per CC file. Names are case-insensitive, so a miss retries on a
    lower-cased copy (rare: every common writer uses the canonical case).
    """
    key = b"\r\n" + name + b":"
    i = block.find(key)
    if i < 0:
        i = block.lower().find(key.lower())
        if i < 0:
            return None
    i += len(key)
    j = block.find(b"\r\n", i)
    return block[i : j if j >= 0 else len(block)].strip()


def parse_warc_record(data: bytes, pos: int = 0) -> tuple[bytes, int, int]:
    """Frame the WARC record at data[pos:]: (header block, payload start, payload end).

    Only what framing needs is validated (version line, header end, Content-Length within
    the member): a record that passes is usable, whatever its other header lines look like.
    """
    if not data.startswith(b"WARC/", pos):
        raise BadRecord("no WARC/ version line")
    head_end = data.find(b"\r\n\r\n", pos)
    if head_end < 0:
        raise BadRecord("unterminated WARC header")
    block = data[pos:head_end]
    length = warc_header(block, b"Content-Length")
    if length is None or not length.isdigit():
        raise BadRecord(f"bad Content-Length {length!r}")
    start = head_end + 4
    end = start + int(length)
    if end > len(data):
        raise BadRecord("Content-Length beyond the end of the gzip member")
    return block, start, end


def member_records(offset: int, data: bytes, stats: ReadStats) -> Iterator[tuple[int, bytes, bytes, int, int]]:
    """Yield (offset, header block, member data, payload start, payload end) per valid WARC record of one member.

    Counts records_read. Several records in one member (not CC's layout, but legal) share the
    member's offset. A broken record costs the rest of its member (no way to find the next one).
    """
    pos, size = 0, len(data)
    while pos < size:
        try:
            block, start, end = parse_warc_record(data, pos)
        except BadRecord:
            stats.skip("bad_warc")
            break
        stats.records_read += 1
        yield offset, block, data, start, end
        pos = end
        while data.startswith(b"\r\n", pos):  # record trailer (and stray blank lines)
            pos += 2


def iter_warc_records(path: Path, stats: ReadStats) -> Iterator[tuple[int, bytes, bytes, int, int]]:
    """member_records over every gzip member of the file."""
    for offset, data in iter_gzip_members(path, stats):
        yield from member_records(offset, data, stats)


def header_str(block: bytes, name: bytes) -> str | None:
    value = warc_header(block, name)
    return None if value is None else value.decode("utf-8", "replace")


# --- WAT JSON -> rows ------------------------------------------------------------------------
