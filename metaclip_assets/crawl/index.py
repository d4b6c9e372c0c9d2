"""CommonCrawl's crawl index and WAT file lists, and a resumable downloader for WAT files. No Dagster here.

- `collinfo.json` (https://index.commoncrawl.org/collinfo.json): a JSON list, newest crawl first, of
  ``{"id": "CC-MAIN-2024-10", "name": ..., "timegate": ..., "cdx-api": ...}`` (newer entries add "from"/"to").
- `<base>/crawl-data/<id>/wat.paths.gz`: gzip text, one WAT path per line, relative to the base URL
  (``crawl-data/CC-MAIN-2024-10/segments/<segment>/wat/<name>.warc.wat.gz``).

Sources are URLs (http, https, file; stdlib urllib with timeouts) or local paths, so a local mirror or a test
server stands in for CommonCrawl. Everything read is validated, and problems raise `CrawlIndexError` (bad
content) or `CrawlFetchError` (could not read it) with the source in the message.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlparse

from metaclip_assets.settings import DEFAULT_BASE_URL, DEFAULT_INDEX_URL  # noqa: E402 - CommonCrawl's endpoints
from metaclip_assets.storage import Storage

USER_AGENT = "metaclip-assets/0.1 (CLIP data curation; +https://github.com/facebookresearch/MetaCLIP)"
# Every CommonCrawl main crawl since 2013 is CC-MAIN-<year>-<week>; the id becomes a partition key and a
# directory name, so anything else (a `|`, a `/`) is refused rather than passed on.
SNAPSHOT_ID = re.compile(r"^CC-MAIN-(\d{4})-(\d{2})\Z")  # \Z: "$" would let a trailing newline through
REQUIRED_KEYS = ("id", "name", "timegate", "cdx-api")
MAX_LIST_BYTES = 64 * 1024 * 1024  # an index or paths file bigger than this is not one
CHUNK = 1 << 20


class CrawlIndexError(ValueError):
    """The index or a paths file was read but its content is not what CommonCrawl publishes."""


class CrawlFetchError(OSError):
    """A source could not be read (network error, HTTP error, missing file, truncated download)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class CrawlInfo:
    id: str
    name: str
    timegate: str
    cdx_api: str


# ---- reading sources ------------------------------------------------------------------------------------
def is_url(source: str) -> bool:
    return urlparse(str(source)).scheme in ("http", "https", "file")


def join_source(base: str, relative: str) -> str:
    """`relative` under a base URL or a local mirror directory."""
    if is_url(base):
        return urljoin(base if base.endswith("/") else base + "/", relative)
    return os.path.join(base, relative)


def _open(source: str, timeout: float):
    """(binary stream, expected length or None). HTTP errors worth retrying are marked retryable."""
    if not is_url(source):
        try:
            f = open(source, "rb")
        except OSError as e:
            raise CrawlFetchError(f"{source}: {e}") from e
        return f, os.fstat(f.fileno()).st_size
    request = urllib.request.Request(source, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        # 429 / 5xx: CommonCrawl's CDN answers 503 "Slow Down" under load; other 4xx will not get better.
        raise CrawlFetchError(f"{source}: HTTP {e.code} {e.reason}", retryable=e.code == 429 or e.code >= 500) from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise CrawlFetchError(f"{source}: {getattr(e, 'reason', e)}", retryable=True) from e
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def read_source(source: str, timeout: float = 30.0, max_bytes: int = MAX_LIST_BYTES) -> bytes:
    stream, _ = _open(source, timeout)
    try:
        with stream:
            data = stream.read(max_bytes + 1)
    except (OSError, TimeoutError) as e:
        raise CrawlFetchError(f"{source}: {e}", retryable=True) from e
    if len(data) > max_bytes:
        raise CrawlIndexError(f"{source}: larger than {max_bytes:,} bytes, not a crawl index or paths file")
    return data


# ---- collinfo.json --------------------------------------------------------------------------------------
def snapshot_sort_key(snapshot_id: str) -> tuple[int, int]:
    m = SNAPSHOT_ID.match(snapshot_id)
    if not m:
        raise CrawlIndexError(f"{snapshot_id!r} is not a CommonCrawl snapshot id (CC-MAIN-<year>-<week>)")
    return int(m.group(1)), int(m.group(2))


def parse_collinfo(data: bytes, source: str = "collinfo.json") -> list[CrawlInfo]:
    """Validated crawls in the index's order (CommonCrawl lists the newest first)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CrawlIndexError(f"{source}: not valid JSON ({e})") from e
    if not isinstance(doc, list):
        raise CrawlIndexError(f"{source}: expected a JSON list of crawls, got {type(doc).__name__}")
    crawls, seen = [], set()
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict):
            raise CrawlIndexError(f"{source}: entry {i} is a {type(entry).__name__}, expected an object")
        missing = [k for k in REQUIRED_KEYS if not isinstance(entry.get(k), str)]
        if missing:
            raise CrawlIndexError(f"{source}: entry {i} ({entry.get('id')!r}) lacks string field(s) {missing}")
        try:
            snapshot_sort_key(entry["id"])
        except CrawlIndexError as e:
            raise CrawlIndexError(f"{source}: entry {i}: {e}") from None
        if entry["id"] in seen:
            raise CrawlIndexError(f"{source}: entry {i}: duplicate id {entry['id']!r}")
        seen.add(entry["id"])
        crawls.append(CrawlInfo(entry["id"], entry["name"], entry["timegate"], entry["cdx-api"]))
    if not crawls:
        raise CrawlIndexError(f"{source}: lists no crawls")
    return crawls


def load_collinfo(source: str = DEFAULT_INDEX_URL, timeout: float = 30.0) -> list[CrawlInfo]:
    return parse_collinfo(read_source(source, timeout), source)


def select_new(
    ids: list[str], known: set[str], min_snapshot: str | None = None, max_count: int | None = None
) -> list[str]:
    """Ids not in `known`, at or after `min_snapshot`, oldest first (cumulative counts need earlier snapshots
    curated first), at most `max_count`."""
    floor = snapshot_sort_key(min_snapshot) if min_snapshot else (0, 0)
    new = sorted((i for i in ids if i not in known and snapshot_sort_key(i) >= floor), key=snapshot_sort_key)
    return new if max_count is None else new[:max_count]


# ---- wat.paths.gz ---------------------------------------------------------------------------------------
def wat_paths_source(snapshot: str, base_url: str = DEFAULT_BASE_URL) -> str:
    return join_source(base_url, f"crawl-data/{snapshot}/wat.paths.gz")


def parse_wat_paths(data: bytes, snapshot: str, source: str = "wat.paths.gz") -> list[str]:
    """WAT paths in file order; each under crawl-data/<snapshot>/, a .wat.gz file, no `..`, unique base names
    (files are stored flat per snapshot and sharded by base name)."""
    try:
        text = gzip.decompress(data).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise CrawlIndexError(f"{source}: not a gzip-compressed UTF-8 list ({type(e).__name__}: {e})") from e
    prefix, paths, names = f"crawl-data/{snapshot}/", [], {}
    for n, line in enumerate(text.splitlines(), 1):
        path = line.strip()
        if not path:
            continue
        if (
            not path.startswith(prefix)
            or not path.endswith(".wat.gz")
            or ".." in path.split("/")
            or "\\" in path
            or any(c.isspace() for c in path)
        ):
            raise CrawlIndexError(f"{source}: line {n} is not a WAT path of {snapshot}: {path[:200]!r}")
        name = path.rsplit("/", 1)[-1]
        if name in names:
            raise CrawlIndexError(f"{source}: line {n}: file name {name} repeats line {names[name]}")
        names[name] = n
        paths.append(path)
    if not paths:
        raise CrawlIndexError(f"{source}: lists no WAT files")
    return paths


def load_wat_paths(snapshot: str, base_url: str = DEFAULT_BASE_URL, timeout: float = 30.0) -> list[str]:
    source = wat_paths_source(snapshot, base_url)
    return parse_wat_paths(read_source(source, timeout), snapshot, source)


# ---- gzip integrity -------------------------------------------------------------------------------------
class GzipChecker:
    """Inflates a (multi-member) gzip stream as it is fed, discarding the output: zlib checks each member's
    CRC-32 and length, so a corrupt or truncated download is caught in the same pass that writes it.
    `feed` never raises; `finish()` returns the first problem (or None)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self.members = 0
        self.uncompressed = 0
        self.error: str | None = None
        self._in_member = False

    def feed(self, data: bytes) -> None:
        while data and self.error is None:
            self._in_member = True
            try:
                out = self._d.decompress(data, CHUNK)  # bounded output: a gzip bomb cannot blow up memory
            except zlib.error as e:
                self.error = f"bad gzip data after {self.members} complete members: {e}"
                return
            self.uncompressed += len(out)
            if self._d.eof:
                self.members += 1
                self._in_member = False
                data = self._d.unused_data
                self._d = zlib.decompressobj(wbits=31)
            else:
                data = self._d.unconsumed_tail

    def finish(self) -> str | None:
        if self.error is None and self._in_member:
            self.error = f"truncated gzip: member {self.members + 1} has no end"
        if self.error is None and self.members == 0:
            self.error = "empty file: no gzip member"
        return self.error


def check_gzip_file(path: str | os.PathLike, storage: Storage | None = None) -> GzipChecker:
    """Inflate a whole file; the checker's `error` says what is wrong with it, if anything."""
    checker = GzipChecker()
    with storage.open(str(path)) if storage else open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            checker.feed(chunk)
    checker.finish()
    return checker


# ---- downloading WAT files ------------------------------------------------------------------------------
@dataclass
class FetchResult:
    downloaded: list[str] = field(default_factory=list)  # base names fetched in this call
    skipped: list[str] = field(default_factory=list)  # already complete
    failed: dict[str, str] = field(default_factory=dict)  # base name -> error
    damaged: dict[str, str] = field(default_factory=dict)  # kept, but the gzip stream is broken at the source
    bytes_downloaded: int = 0

    @property
    def files(self) -> list[str]:
        return sorted(self.downloaded + self.skipped)


def sidecar_key(snapshot: str, name: str) -> str:
    # Dot-prefixed, so Storage.list (and thus crawl_pool) never takes it for a crawl file.
    return f"{snapshot}/.{name}.fetched.json"


def is_complete(storage: Storage, snapshot: str, name: str) -> bool:
    """Cheap resume test: the sidecar written after a verified download matches the file's size, and the file
    starts with the gzip magic. A file without a sidecar (copied in by hand, or a crash between the two
    writes) is inflated once locally: if it is sound it gets its sidecar, otherwise it is fetched again."""
    key, side = f"{snapshot}/{name}", sidecar_key(snapshot, name)
    if not storage.exists(key):
        return False
    if storage.exists(side):
        record = storage.read_json(side)
        with storage.open(key) as f:
            magic = f.read(2)
        return record.get("bytes") == storage.size(key) and magic == b"\x1f\x8b"
    checker = check_gzip_file(key, storage)
    if checker.error:
        return False
    storage.write_json(
        side,
        {
            "bytes": storage.size(key),
            "gzip_members": checker.members,
            "uncompressed_bytes": checker.uncompressed,
            "source": "verified in place",
        },
    )
    return True


def _download_one(source: str, storage: Storage, snapshot: str, name: str, timeout: float) -> tuple[int, str | None]:
    """(bytes, gzip problem or None). A transfer that ends short is an error (retryable); a transfer that is
    complete (size == Content-Length) but does not inflate is the file as published: CommonCrawl has the odd
    truncated or corrupt file, a new download gives the same bytes, and the pool reader salvages its sound
    records and counts the rest (truncated_gzip / bad_gzip), so it is kept and reported."""
    key = f"{snapshot}/{name}"
    stream, expected = _open(source, timeout)
    checker, size = GzipChecker(), 0
    with stream, storage.atomic_write(key) as tmp:  # the final name appears only after the checks below
        with open(tmp, "wb") as out:
            try:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    checker.feed(chunk)
                    size += len(chunk)
            except (OSError, TimeoutError) as e:  # connection reset, read timeout, IncompleteRead
                raise CrawlFetchError(f"{source}: {type(e).__name__}: {e}", retryable=True) from e
        if expected is not None and size != expected:
            raise CrawlFetchError(f"{source}: got {size:,} of {expected:,} bytes", retryable=True)
        problem = checker.finish()
        if problem and expected is None:  # no length to tell a cut transfer from a damaged file: retry
            raise CrawlFetchError(f"{source}: {problem} ({size:,} bytes, no Content-Length)", retryable=True)
    storage.write_json(
        sidecar_key(snapshot, name),
        {
            "bytes": size,
            "source": source,
            "gzip_members": checker.members,
            "uncompressed_bytes": checker.uncompressed,
            "gzip_error": problem,
        },
    )
    return size, problem


def fetch_wat_files(
    snapshot: str,
    paths: list[str],
    base_url: str,
    dest_storage: Storage,
    limit: int | None = None,
    *,
    timeout: float = 60.0,
    retries: int = 3,
    backoff_s: float = 2.0,
    workers: int = 2,
    progress=None,
    raise_on_error: bool = True,
) -> FetchResult:
    """Download `paths` (relative to `base_url`, a URL or a local mirror) to `<dest_storage>/<snapshot>/<name>`.

    `dest_storage` is the crawl root (`{data_root}/crawl` by default), where crawl_pool lists a snapshot's files.
    Each file is inflated while it streams and written atomically once its size matched Content-Length; complete
    files are skipped, so an interrupted fetch resumes where it stopped. Transient errors (timeouts, resets,
    429/5xx, short transfers) are retried with exponential backoff. Files damaged at the source are kept and
    listed in `damaged` (see `_download_one`). `progress(result, total)` is called after each file. Failures are
    collected; with `raise_on_error` a `CrawlFetchError` lists them at the end.
    """
    todo = list(paths[:limit] if limit is not None else paths)
    result, lock = FetchResult(), threading.Lock()

    def one(path: str) -> None:
        name = path.rsplit("/", 1)[-1]
        if is_complete(dest_storage, snapshot, name):
            with lock:
                result.skipped.append(name)
        else:
            source = join_source(base_url, path)
            for attempt in range(retries + 1):
                try:
                    size, problem = _download_one(source, dest_storage, snapshot, name, timeout)
                except CrawlFetchError as e:
                    if not e.retryable or attempt == retries:
                        with lock:
                            result.failed[name] = str(e)
                        break
                    time.sleep(backoff_s * 2**attempt)
                else:
                    with lock:
                        result.downloaded.append(name)
                        result.bytes_downloaded += size
                        if problem:
                            result.damaged[name] = problem
                    break
        if progress:
            with lock:
                progress(result, len(todo))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, todo))
    if result.failed and raise_on_error:
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())[:5])
        raise CrawlFetchError(
            f"{len(result.failed)} of {len(todo)} WAT files of {snapshot} failed "
            f"({len(result.downloaded)} downloaded, {len(result.skipped)} already there): {shown}"
        )
    return result


__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_INDEX_URL",
    "CrawlFetchError",
    "CrawlIndexError",
    "CrawlInfo",
    "FetchResult",
    "GzipChecker",
    "check_gzip_file",
    "fetch_wat_files",
    "is_complete",
    "load_collinfo",
    "load_wat_paths",
    "parse_collinfo",
    "parse_wat_paths",
    "read_source",
    "select_new",
    "snapshot_sort_key",
    "wat_paths_source",
]
