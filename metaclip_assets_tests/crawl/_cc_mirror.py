"""A CommonCrawl look-alike on 127.0.0.1 for tests: collinfo.json, crawl-data/<id>/wat.paths.gz and WAT files
(real ones, from the sample generator), served by the stdlib HTTP server in a thread."""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import shutil
import threading
from pathlib import Path

from metaclip_assets.sample.snapshot import make_sample_snapshot


def collinfo_entry(snapshot: str) -> dict:
    return {
        "id": snapshot,
        "name": f"Index {snapshot}",
        "timegate": f"https://index.commoncrawl.org/{snapshot}/",
        "cdx-api": f"https://index.commoncrawl.org/{snapshot}-index",
        "from": "2030-01-28T02:31:22",
        "to": "2030-02-10T05:31:22",
    }


def write_collinfo(mirror: Path, snapshots: list[str], name: str = "collinfo.json") -> None:
    # CommonCrawl lists the newest crawl first.
    entries = [collinfo_entry(s) for s in sorted(snapshots, reverse=True)]
    (mirror / name).write_text(json.dumps(entries, indent=1))


def publish_snapshot(mirror: Path, snapshot: str, work: Path, n_wat_files: int = 4, seed: int = 0) -> list[str]:
    """Generate a small sample snapshot and lay its WAT files out as CommonCrawl does; returns the paths."""
    gen = work / f"gen-{snapshot}"
    manifest = make_sample_snapshot(gen, snapshot, seed=seed, n_wat_files=n_wat_files, pages_per_file=30)
    paths = []
    for i, name in enumerate(manifest.wat_files):
        rel = f"crawl-data/{snapshot}/segments/189000000{i % 2}.{i % 2}/wat/{name}"
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gen / manifest.crawl_dir / name, mirror / rel)
        paths.append(rel)
    (mirror / f"crawl-data/{snapshot}/wat.paths.gz").write_bytes(gzip.compress(("\n".join(paths) + "\n").encode()))
    return paths


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


class MirrorServer:
    """`with MirrorServer(dir) as base_url:` serves `dir` until the block ends."""

    def __init__(self, directory: Path, handler=_QuietHandler):
        handler = functools.partial(handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
