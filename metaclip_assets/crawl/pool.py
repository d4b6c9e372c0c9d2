"""The candidate pool's shared vocabulary: one row per (image URL, text) found in CommonCrawl files.

Owns `POOL_SCHEMA`, `ReadStats` and the closed set of skip reason codes, pair ids and image uuids, the column
buffers and the per-file `FileRead` scaffolding that the format readers (`wat.py`, `warc_html.py`) share.
Entry points that read files are in `build.py`; image URL resolution in `urls.py`; gzip/WARC framing in
`framing.py`. Imports nothing from the rest of `crawl/`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TypeVar

import numpy as np
import polars as pl

try:  # compiled image uuids (libcrypto's SHA-224) and WAT rows (_native/), built by `pip install`
    from metaclip_assets import _native
except ImportError:  # pragma: no cover - a source checkout that was never installed
    _native = None

POOL_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.UInt64,
    "image_uuid": pl.Utf8,
    "url": pl.Utf8,
    "text": pl.Utf8,
    "text_key": pl.Utf8,
    "snapshot": pl.Utf8,
    "source_file": pl.Utf8,
    "record_offset": pl.Int64,
    "page_url": pl.Utf8,
    "fetch_time": pl.Utf8,
    "source_format": pl.Utf8,
}
# Worldwide mode only (build_pool(lang=True)): the text's Wikipedia language code or "other" (crawl/langid.py),
# appended after POOL_SCHEMA's columns; v1 pools never carry it.
LANG_SCHEMA: dict[str, pl.DataType] = {"lang": pl.Utf8}

# Why a record (or a link inside one) was dropped: the one list of reasons (the data card's bad-record table shows
# every one of them; README "Guarantees" says what input gets which). Anything else worth counting that is *not*
# a defect of the input goes to `ReadStats.counts` (OTHER_SKIPS), so that `skips` reads as "how broken was this input".
SKIP_REASONS = (
    "truncated_gzip",  # file ends inside a gzip member and no later member reads
    "bad_gzip",  # corrupt gzip member (or non-gzip bytes): once per unreadable region + per damaged member header in it
    "too_large",  # gzip member or decoded HTTP body over its size cap (framing.MAX_MEMBER_BYTES, warc_html.MAX_BODY_BYTES)
    "bad_warc",  # gzip fine, but no valid WARC record inside (header, Content-Length)
    "bad_json",  # WAT payload that is not JSON
    "bad_encoding",  # payload / HTML / text / page URL that is not decodable (or holds lone surrogates)
    "missing_field",  # WAT JSON without the structure a metadata record must have
    "bad_url",  # image URL that does not resolve to an absolute http(s) URL
)
# Dropped, but not a defect: non-HTML captures, data: URIs (nothing to fetch), empty src, image links without text.
OTHER_SKIPS = ("not_html", "data_uri", "no_src", "no_text")

TEXT_KEYS = ("alt", "title", "data-image-title")  # MetaCLIP's three text attributes, in this order
PROGRESS_EVERY = 10_000  # records between progress callbacks


@dataclass
class ReadStats:
    """Counters of one read (a file, or many files after `merge`)."""

    files: int = 0
    records_read: int = 0  # WARC records parsed (every type, with or without images)
    pages_with_images: int = 0  # records with at least one <img>/IMG link carrying a URL
    images_seen: int = 0  # <img src> / IMG@/src links with a URL
    pairs: int = 0  # rows in the returned DataFrame
    duplicates_dropped: int = 0  # identical (url, text) rows removed by build_pool
    skips: dict[str, int] = field(default_factory=dict)  # reason (SKIP_REASONS) -> count
    counts: dict[str, int] = field(default_factory=dict)  # OTHER_SKIPS: not_html, data_uri, no_src, no_text
    # compressed bytes of the file no record was read from, by the reason of their region (framing.iter_gzip_members)
    bytes_skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        if reason not in SKIP_REASONS:  # keep the reason vocabulary closed (it is a contract)
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        self.skips[reason] = self.skips.get(reason, 0) + n

    def count(self, key: str, n: int = 1) -> None:
        if key not in OTHER_SKIPS:
            raise ValueError(f"unknown count {key!r}; expected one of {OTHER_SKIPS}")
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def skipped(self) -> int:
        return sum(self.skips.values())

    def merge(self, other: ReadStats) -> ReadStats:
        """Add `other` into self (in place) and return self."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for k, v in theirs.items():
                    mine[k] = mine.get(k, 0) + v
            else:
                setattr(self, f.name, mine + theirs)
        return self

    def copy(self) -> ReadStats:
        return ReadStats().merge(self)

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["skips"] = dict(sorted(self.skips.items()))
        out["counts"] = dict(sorted(self.counts.items()))
        out["bytes_skipped"] = dict(sorted(self.bytes_skipped.items()))
        return out


ProgressFn = Callable[[ReadStats], None]
T = TypeVar("T")


def empty_pool() -> pl.DataFrame:
    return pl.DataFrame(schema=POOL_SCHEMA)


def pair_ids(urls: list[str], texts: list[str]) -> np.ndarray:
    """The pair id: little-endian blake2b-64 of url + NUL + text, from hashlib (a stored contract: never change it).

    Each row copies one empty blake2b-64 state: ~1.2x faster than `blake2b(data, digest_size=8)`, whose keyword
    parsing dominates for short inputs (bench/bench_ids.py). One formatted string per pair (a single encode;
    byte-identical to u.encode()+b"\\x00"+t.encode()) and one joined digest buffer read by numpy: no Python int per row.
    """
    new = hashlib.blake2b(digest_size=8).copy
    digests = []
    for u, t in zip(urls, texts):
        h = new()
        h.update(f"{u}\x00{t}".encode())
        digests.append(h.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8")


def image_uuid(url: str) -> str:
    """MetaCLIP's image id: the first 24 hex digits (96 bits) of sha224(url)."""
    return hashlib.sha224(url.encode()).hexdigest()[:24]


def image_uuids(urls: list[str]) -> list[str]:
    """`image_uuid` per row, each distinct URL hashed once (several texts per image): the Python reference of
    `_native.image_uuids`."""
    memo: dict[str, str] = {}
    return [memo.get(u) or memo.setdefault(u, image_uuid(u)) for u in urls]


class PoolColumns:
    """Column buffers a reader appends to; `to_frame` adds the derived and constant columns."""

    __slots__ = ("url", "text", "text_key", "record_offset", "page_url", "fetch_time")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, [])

    def __len__(self) -> int:
        return len(self.url)

    def append(self, url: str, text: str, key: str, offset: int, page_url: str, fetch_time: str) -> None:
        self.url.append(url)
        self.text.append(text)
        self.text_key.append(key)
        self.record_offset.append(offset)
        self.page_url.append(page_url)
        self.fetch_time.append(fetch_time)

    def to_frame(self, *, snapshot: str, source_file: str, source_format: str) -> pl.DataFrame:
        n = len(self.url)
        if n == 0:
            return empty_pool()
        data = {
            "pair_id": pl.Series(pair_ids(self.url, self.text), dtype=pl.UInt64),
            # libcrypto's SHA-224 in one compiled loop when built (bench/bench_ids.py; _native/test_kernels.py)
            "image_uuid": (_native.image_uuids if _native is not None else image_uuids)(self.url),
            "url": self.url,
            "text": self.text,
            "text_key": self.text_key,
            "snapshot": [snapshot] * n,
            "source_file": [source_file] * n,
            "record_offset": self.record_offset,
            "page_url": self.page_url,
            "fetch_time": self.fetch_time,
            "source_format": [source_format] * n,
        }
        return pl.DataFrame(data, schema=POOL_SCHEMA)


class FileRead:
    """Scaffolding of one file read shared by the readers: counters, column buffers, progress, frame.

    The reader keeps its per-record logic and loops over `records(...)`; `finish` builds the result.
    """

    __slots__ = ("stats", "cols", "progress", "progress_every")

    def __init__(self, progress: ProgressFn | None = None, progress_every: int = PROGRESS_EVERY) -> None:
        self.stats = ReadStats(files=1)
        self.cols = PoolColumns()
        self.progress = progress
        self.progress_every = progress_every

    def records(self, records: Iterator[T]) -> Iterator[T]:
        """`records`, calling `progress` every `progress_every` records read (as counted in `stats`)."""
        if self.progress is None:  # no wrapper: nothing is added per record when nobody listens
            return records
        return self._reporting(records)

    def _reporting(self, records: Iterator[T]) -> Iterator[T]:
        stats, cols, progress, every = self.stats, self.cols, self.progress, self.progress_every
        next_report = every
        for record in records:
            if stats.records_read >= next_report:
                stats.pairs = len(cols)  # live count for the progress log
                progress(stats)
                next_report += every
            yield record

    def finish(self, *, snapshot: str, source_name: str, source_format: str) -> tuple[pl.DataFrame, ReadStats]:
        """Final progress report and the (pool rows, stats) a reader returns."""
        self.stats.pairs = len(self.cols)
        if self.progress is not None:
            self.progress(self.stats)
        return self.cols.to_frame(snapshot=snapshot, source_file=source_name, source_format=source_format), self.stats


def strip_angle(uri: str) -> str:
    """WARC 1.1 writers such as wget wrap WARC-Target-URI in <...>."""
    return uri[1:-1] if uri.startswith("<") and uri.endswith(">") else uri


def has_surrogates(s: str) -> bool:
    """Lone surrogates (from a JSON \\udXXX escape) cannot be encoded: such strings are dropped or repaired."""
    if s.isascii():
        return False
    try:
        s.encode()
    except UnicodeEncodeError:
        return True
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(s: str) -> str:
    """`s` with every lone surrogate replaced by U+FFFD (what bytes.decode(errors="replace") gives for bad bytes)."""
    return _SURROGATE.sub("\ufffd", s)
