"""Crawl index and WAT-list parsing, and the resumable WAT downloader, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import os
import socket

import pytest

from metaclip_assets.crawl.build import build_pool
from metaclip_assets.crawl.index import (
    CrawlFetchError,
    CrawlIndexError,
    check_gzip_file,
    fetch_wat_files,
    is_complete,
    load_collinfo,
    load_wat_paths,
    parse_collinfo,
    parse_wat_paths,
    select_new,
    sidecar_key,
)
from metaclip_assets.storage import Storage
from metaclip_assets_tests.crawl._cc_mirror import MirrorServer, _QuietHandler, publish_snapshot, write_collinfo

SNAP = "CC-MAIN-2030-05"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    paths = publish_snapshot(root, SNAP, tmp_path_factory.mktemp("gen"))
    write_collinfo(root, ["CC-MAIN-2029-50", SNAP])
    with MirrorServer(root) as url:
        yield root, url, paths


# ---- collinfo.json --------------------------------------------------------------------------------------
def test_collinfo_from_url_and_path(mirror):
    root, url, _ = mirror
    by_url = load_collinfo(url + "collinfo.json", timeout=5)
    assert [c.id for c in by_url] == [SNAP, "CC-MAIN-2029-50"]
    assert by_url[0].cdx_api == f"https://index.commoncrawl.org/{SNAP}-index"
    assert load_collinfo(str(root / "collinfo.json")) == by_url
    assert load_collinfo((root / "collinfo.json").as_uri()) == by_url


@pytest.mark.parametrize(
    "body, message",
    [
        (b'[{"id": "CC-MAIN-2024-10",', "not valid JSON"),
        (b"\xff\xfe garbage", "not valid JSON"),
        (b'{"id": "CC-MAIN-2024-10"}', "expected a JSON list"),
        (b"[]", "lists no crawls"),
        (b'["CC-MAIN-2024-10"]', "entry 0 is a str"),
        (b'[{"id": "CC-MAIN-2024-10", "name": "x", "timegate": "t"}]', "lacks string field(s) ['cdx-api']"),
        (b'[{"id": 2024, "name": "x", "timegate": "t", "cdx-api": "c"}]', "lacks string field(s) ['id']"),
        (b'[{"id": "CC-MAIN-2024|10", "name": "x", "timegate": "t", "cdx-api": "c"}]', "not a CommonCrawl snapshot id"),
        (b'[{"id": "../../etc", "name": "x", "timegate": "t", "cdx-api": "c"}]', "not a CommonCrawl snapshot id"),
    ],
)
def test_malformed_collinfo_is_a_clear_error(body, message):
    with pytest.raises(CrawlIndexError) as e:
        parse_collinfo(body, "idx.json")
    assert message in str(e.value) and "idx.json" in str(e.value)


def test_duplicate_ids_refused():
    entry = {"id": SNAP, "name": "x", "timegate": "t", "cdx-api": "c"}
    with pytest.raises(CrawlIndexError, match="duplicate id"):
        parse_collinfo(json.dumps([entry, entry]).encode())


def test_unreachable_index_is_a_fetch_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CrawlFetchError, match=f"127.0.0.1:{port}"):
        load_collinfo(f"http://127.0.0.1:{port}/collinfo.json", timeout=2)
    with pytest.raises(CrawlFetchError, match="No such file"):
        load_collinfo(str(tmp_path / "missing.json"))


def test_select_new_oldest_first_with_filters():
    ids = ["CC-MAIN-2024-18", "CC-MAIN-2024-10", "CC-MAIN-2023-50", "CC-MAIN-2013-20"]
    assert select_new(ids, set()) == ["CC-MAIN-2013-20", "CC-MAIN-2023-50", "CC-MAIN-2024-10", "CC-MAIN-2024-18"]
    assert select_new(ids, {"CC-MAIN-2024-10"}, min_snapshot="CC-MAIN-2023-50") == [
        "CC-MAIN-2023-50",
        "CC-MAIN-2024-18",
    ]
    assert select_new(ids, set(), min_snapshot="CC-MAIN-2023-50", max_count=1) == ["CC-MAIN-2023-50"]
    with pytest.raises(CrawlIndexError):
        select_new(ids, set(), min_snapshot="2024-10")


# ---- wat.paths.gz ---------------------------------------------------------------------------------------
def test_wat_paths_from_server_and_mirror_dir(mirror):
    root, url, paths = mirror
    assert load_wat_paths(SNAP, url, timeout=5) == paths
    assert load_wat_paths(SNAP, str(root)) == paths
    with pytest.raises(CrawlFetchError, match="HTTP 404"):
        load_wat_paths("CC-MAIN-2029-50", url, timeout=5)


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "lists no WAT files"),
        (["crawl-data/CC-MAIN-2024-18/segments/1/wat/a.warc.wat.gz"], "not a WAT path of"),
        ([f"crawl-data/{SNAP}/segments/1/warc/a.warc.gz"], "not a WAT path of"),
        ([f"crawl-data/{SNAP}/../../a.warc.wat.gz"], "not a WAT path of"),
        (
            [f"crawl-data/{SNAP}/segments/1/wat/a.warc.wat.gz", f"crawl-data/{SNAP}/segments/2/wat/a.warc.wat.gz"],
            "file name a.warc.wat.gz repeats line 1",
        ),
    ],
)
def test_bad_paths_lists_refused(lines, message):
    with pytest.raises(CrawlIndexError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_wat_paths(gzip.compress("\n".join(lines).encode()), SNAP)
    with pytest.raises(CrawlIndexError, match="not a gzip"):
        parse_wat_paths(b"crawl-data/x", SNAP)


# ---- downloading ----------------------------------------------------------------------------------------
def test_fetch_writes_verified_files_and_resumes(mirror, tmp_path):
    root, url, paths = mirror
    dest = Storage(tmp_path / "crawl")
    first = fetch_wat_files(SNAP, paths, url, dest, limit=3, timeout=5)
    names = [p.rsplit("/", 1)[-1] for p in paths]
    assert sorted(first.downloaded) == sorted(names[:3]) and not first.skipped and not first.failed
    for name, path in zip(names[:3], paths):
        assert (tmp_path / "crawl" / SNAP / name).read_bytes() == (root / path).read_bytes()
    # crawl_pool lists the snapshot folder: only the WAT files, no sidecars or temp files
    assert dest.list(SNAP) == sorted(f"{SNAP}/{n}" for n in names[:3])
    pool, stats = build_pool([(dest.local_path(f"{SNAP}/{names[0]}"), names[0])], snapshot=SNAP)
    assert len(pool) > 0 and stats.records_read > 0  # the pool reader takes the downloaded file

    second = fetch_wat_files(SNAP, paths, url, dest, timeout=5)
    assert sorted(second.skipped) == sorted(names[:3]) and second.downloaded == [names[3]]
    assert second.bytes_downloaded == (root / paths[3]).stat().st_size
    # The sample plants a file truncated at the source (as CommonCrawl has the odd one): the whole published
    # file is kept for the pool reader to salvage, and reported, instead of failing the shard forever.
    at_source = {n: check_gzip_file(root / p).error for n, p in zip(names, paths)}
    assert {n: e for n, e in at_source.items() if e} == {**first.damaged, **second.damaged} != {}


def test_truncated_or_foreign_file_in_place_is_replaced(mirror, tmp_path):
    root, url, paths = mirror
    dest = Storage(tmp_path / "crawl")
    name = paths[0].rsplit("/", 1)[-1]
    target = tmp_path / "crawl" / SNAP / name
    target.parent.mkdir(parents=True)
    good = (root / paths[0]).read_bytes()
    target.write_bytes(good[: len(good) // 2])  # an interrupted copy made by some other tool
    assert not is_complete(dest, SNAP, name)
    result = fetch_wat_files(SNAP, paths[:1], url, dest, timeout=5)
    assert result.downloaded == [name] and target.read_bytes() == good
    # a complete file copied in by hand is verified once, gets its sidecar, and is not downloaded again
    os.remove(dest.local_path(sidecar_key(SNAP, name)))
    assert fetch_wat_files(SNAP, paths[:1], url, dest, timeout=5).skipped == [name]
    assert dest.exists(sidecar_key(SNAP, name))
    # the cheap resume test still notices a file whose size changed after its download
    target.write_bytes(good + b"\x00")
    assert not is_complete(dest, SNAP, name)


class _BadServer(_QuietHandler):
    """/short/<f>: announces the full length, sends half and closes. /flip/<f>: one corrupted byte."""

    def do_GET(self):  # noqa: N802 - stdlib name
        mode, _, rest = self.path.lstrip("/").partition("/")
        data = open(os.path.join(self.directory, rest), "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "short":
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        else:
            mid = len(data) // 2
            self.wfile.write(data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :])


def test_short_transfers_are_retried_then_reported_never_kept(mirror, tmp_path):
    root, _, paths = mirror
    dest = Storage(tmp_path / "crawl")
    with MirrorServer(root, handler=_BadServer) as url:
        with pytest.raises(CrawlFetchError, match=r"got [\d,]+ of [\d,]+ bytes|Incomplete") as e:
            fetch_wat_files(SNAP, paths[:1], url + "short/", dest, timeout=5, retries=1, backoff_s=0.01)
        assert "1 of 1 WAT files" in str(e.value)
        result = fetch_wat_files(SNAP, paths[:1], url + "short/", dest, timeout=5, retries=0, raise_on_error=False)
    assert list(result.failed) == [paths[0].rsplit("/", 1)[-1]] and not result.downloaded
    assert not (tmp_path / "crawl" / SNAP).exists() or not any((tmp_path / "crawl" / SNAP).iterdir())


def test_complete_transfer_of_a_corrupt_file_is_kept_and_flagged(mirror, tmp_path):
    root, _, paths = mirror
    dest, name = Storage(tmp_path / "crawl"), paths[0].rsplit("/", 1)[-1]
    with MirrorServer(root, handler=_BadServer) as url:
        result = fetch_wat_files(SNAP, paths[:1], url + "flip/", dest, timeout=5)
    assert result.downloaded == [name] and "bad gzip data" in result.damaged[name]
    assert dest.read_json(sidecar_key(SNAP, name))["gzip_error"] == result.damaged[name]
    assert check_gzip_file(dest.local_path(f"{SNAP}/{name}")).error  # the pool reader will count it


def test_gzip_checker_reads_multi_member_files(mirror):
    root, _, paths = mirror
    checker = check_gzip_file(root / paths[0])
    assert checker.error is None and checker.members > 1  # CommonCrawl files are one gzip member per record
    assert checker.uncompressed == len(gzip.decompress((root / paths[0]).read_bytes()))
