"""Benchmark: samples/s/core of acquisition (fetch + decode + resize + JPEG encode + shard write).

Two sources, both real code paths of `metaclip_assets.acquisition.acquire`:
  replay  (default) a WARC file written here (one gzip member per response record, as CommonCrawl stores them)
          replayed by `WarcReplaySource`: no network, so all the CPU is acquisition's
  http    a stdlib HTTP server in a *separate process* fetched by `HttpImageSource` (the server's CPU is not counted)

The images are real COCO val2017 photos (~640x480 JPEG) from ../shared/realdata, or, where that is absent,
generated 640x480 photo-like JPEGs. Each stored copy has a few unique bytes appended after the JPEG's
end-of-image marker: decoders ignore them, but the sha256 differs, so exact dedup keeps every sample.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_acquisition.py --workers 1          # per core, replay
    .venv/bin/python bench/bench_acquisition.py --source http --workers 4 --rounds 1   # the issue-15 setting

`samples/s/core` = written samples / CPU seconds of this process (all its threads), median of `--rounds` runs.
The breakdown times each stage alone on one thread (fetch of every body, then `process_image` of every body);
"write + rest" is the end-to-end CPU minus those two (tar + sidecar parquet + index + bookkeeping).
Reference: img2dataset publishes ~85 images/s per core for the same work (download + resize + write).
"""

from __future__ import annotations

import argparse
import functools
import io
import multiprocessing as mp
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, loadavg, usable_cores  # noqa: E402

from metaclip_assets.acquisition import (  # noqa: E402
    HttpImageSource,
    ImageSource,
    ProcessConfig,
    WarcReplaySource,
    acquire,
    process_image,
)
from metaclip_assets.crawl.pool import image_uuid, pair_ids  # noqa: E402
from metaclip_assets.sample import warc_writer as W  # noqa: E402

IMG2DATASET_PER_CORE = 85  # images/s per core, img2dataset's published figure (README, "speed" section)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(directory: str, port_queue: mp.Queue) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=directory))
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def generated_photos(n: int = 79, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[bytes]:
    """Photo-like JPEGs (smooth colour fields + texture + noise, q90) for machines without ../shared."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            fx, fy, ph = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
            img[..., c] = 128 + 90 * np.sin(xx * fx + ph) * np.cos(yy * fy - ph)
        img += 20 * np.sin(xx * rng.uniform(0.1, 0.5))[..., None] + rng.normal(0, 6, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_warc(path: Path, urls: list[str], bodies: list[bytes]) -> None:
    """One response record per image, each its own gzip member (CommonCrawl's layout)."""
    when = datetime(2024, 1, 1, tzinfo=UTC)
    ids = W.RecordIds("bench-acquisition")
    members = []
    for url, data in zip(urls, bodies, strict=True):
        head = W.http_head("HTTP/1.1 200 OK", [("Content-Type", "image/jpeg"), ("Content-Length", str(len(data)))])
        block = head.encode() + data
        headers = W.capture_headers(
            "response",
            url,
            W.iso_date(when),
            ids(),
            block,
            content_type="application/http; msgtype=response",
            payload=data,
            payload_type="image/jpeg",
        )
        members.append(W.warc_member(headers, block))
    W.write_members(path, members)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared/realdata/coco-mini-val2017/val2017")
    ap.add_argument("--source", choices=("replay", "http"), default="replay")
    ap.add_argument("--n", type=int, default=600, help="samples (one caption per image)")
    ap.add_argument("--workers", type=int, default=1, help="fetch threads (1: the per-core figure)")
    ap.add_argument("--rounds", type=int, default=3, help="end-to-end runs; the median is reported")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--resize-mode", default="center_crop")
    ap.add_argument("--jpeg-quality", type=int, default=95)
    ap.add_argument("--samples-per-shard", type=int, default=200)
    args = ap.parse_args()

    sources = sorted(args.images.glob("*.jpg"))
    originals = [p.read_bytes() for p in sources] or generated_photos()
    origin = f"{len(sources)} COCO val2017 JPEGs" if sources else "79 generated 640x480 JPEGs (no ../shared)"
    cfg = ProcessConfig(args.image_size, args.resize_mode, args.jpeg_quality)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        urls = [f"http://bench.example/img/{i:06d}.jpg" for i in range(args.n)]
        bodies = [originals[i % len(originals)] + i.to_bytes(8, "little") for i in range(args.n)]  # new sha256
        server = None
        source: ImageSource
        if args.source == "replay":
            write_warc(work / "images.warc.gz", urls, bodies)
            source = WarcReplaySource.from_files([work / "images.warc.gz"])
        else:
            (work / "www").mkdir()
            for i, data in enumerate(bodies):
                (work / "www" / f"{i:06d}.jpg").write_bytes(data)
            q: mp.Queue = mp.Queue()
            server = mp.Process(target=_serve, args=(str(work / "www"), q), daemon=True)
            server.start()
            port = q.get(timeout=10)
            urls = [f"http://127.0.0.1:{port}/{i:06d}.jpg" for i in range(args.n)]
            source = HttpImageSource(
                timeout=30,
                max_retries=0,
                allow_loopback_for_tests=True,
                max_per_host=args.workers,
                max_connections=args.workers,
            )
        try:
            texts = [f"caption {i}" for i in range(args.n)]
            rows = pl.DataFrame(
                {
                    "pair_id": pl.Series(pair_ids(urls, texts), dtype=pl.UInt64),
                    "image_uuid": [image_uuid(u) for u in urls],
                    "url": urls,
                    "text": texts,
                }
            )
            # stages alone, one thread: fetch every body, then decode + resize + encode them
            c0 = cpu_seconds()
            fetched = [source.fetch(u).body or b"" for u in urls]
            fetch_cpu = cpu_seconds() - c0
            c0 = cpu_seconds()
            for data in fetched:
                process_image(data, cfg)
            process_cpu = cpu_seconds() - c0

            walls, cpus = [], []
            for r in range(args.rounds):
                out_dir = work / f"out{r}"
                c0, t0 = cpu_seconds(), time.perf_counter()
                res = acquire(
                    rows,
                    source,
                    out_dir,
                    snapshot="BENCH",
                    samples_per_shard=args.samples_per_shard,
                    image_size=args.image_size,
                    resize_mode=args.resize_mode,
                    jpeg_quality=args.jpeg_quality,
                    workers=args.workers,
                )
                walls.append(time.perf_counter() - t0)
                cpus.append(cpu_seconds() - c0)
                assert res.ok == args.n, res.counts
                shutil.rmtree(out_dir)
        finally:
            if server is not None:
                server.terminate()
                server.join(5)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    n = args.n
    per_core = n / cpu
    rest = cpu - fetch_cpu - process_cpu
    print(
        f"RESULT acquisition: source={args.source} samples={n} wall={wall:.2f}s cpu={cpu:.2f}s "
        f"samples/s={n / wall:.1f} samples/s/core={per_core:.1f} "
        f"({per_core / IMG2DATASET_PER_CORE:.2f}x img2dataset's ~{IMG2DATASET_PER_CORE}/s/core) | "
        f"{args.resize_mode} {args.image_size}px q{args.jpeg_quality}, workers={args.workers}, "
        f"rounds={args.rounds} (cpu s: {', '.join(f'{c:.2f}' for c in cpus)}), "
        f"input {origin}, {sum(map(len, bodies)) / n / 1024:.0f} KiB/img, "
        f"cores={usable_cores()}, load {loadavg()}, python {platform.python_version()}"
    )
    print(
        f"BREAKDOWN ms/image of CPU: fetch {fetch_cpu / n * 1e3:.2f} | decode+resize+encode "
        f"{process_cpu / n * 1e3:.2f} ({n / process_cpu:.1f}/s/core alone) | write + rest {rest / n * 1e3:.2f} | "
        f"end to end {cpu / n * 1e3:.2f}"
    )


if __name__ == "__main__":
    main()
