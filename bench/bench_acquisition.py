"""Benchmark: samples/s/core of acquisition (HTTP fetch + decode + resize + JPEG encode + shard write).

The images are real COCO val2017 photos (~640x480 JPEG) from ../shared/realdata, served by a stdlib
HTTP server running in a *separate process*, so the CPU time measured here (process time of this
process: all fetch/decode threads) is the acquisition's alone. Each served file is a COCO JPEG with a few
unique bytes appended after its end-of-image marker: decoders ignore them, but the sha256 differs, so
exact dedup keeps every sample (otherwise 79 distinct photos would dedup a large run to 79 samples).

    .venv/bin/python bench/bench_acquisition.py [--n 600] [--workers 4] [--image-size 256]

Prints one RESULT line; `samples/s/core` = written samples / CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metaclip_assets.acquisition import HttpImageSource, ProcessConfig, acquire, process_image  # noqa: E402
from metaclip_assets.crawl.pool import image_uuid, pair_ids  # noqa: E402


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def _serve(directory: str, port_queue: mp.Queue) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=directory))
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared/realdata/coco-mini-val2017/val2017")
    ap.add_argument("--n", type=int, default=600, help="samples (one caption per image)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--resize-mode", default="center_crop")
    ap.add_argument("--jpeg-quality", type=int, default=95)
    ap.add_argument("--samples-per-shard", type=int, default=200)
    args = ap.parse_args()

    sources = sorted(args.images.glob("*.jpg"))
    if not sources:
        sys.exit(f"no JPEGs under {args.images} (needs ../shared/realdata/coco-mini-val2017)")
    originals = [p.read_bytes() for p in sources]
    with tempfile.TemporaryDirectory() as tmp:
        serve_dir, out_dir = Path(tmp, "www"), Path(tmp, "out")
        serve_dir.mkdir()
        total_bytes = 0
        for i in range(args.n):
            data = originals[i % len(originals)] + i.to_bytes(8, "little")  # after EOI: same pixels, new sha256
            (serve_dir / f"{i:06d}.jpg").write_bytes(data)
            total_bytes += len(data)
        q: mp.Queue = mp.Queue()
        server = mp.Process(target=_serve, args=(str(serve_dir), q), daemon=True)
        server.start()
        port = q.get(timeout=10)
        try:
            urls = [f"http://127.0.0.1:{port}/{i:06d}.jpg" for i in range(args.n)]
            texts = [f"caption {i}" for i in range(args.n)]
            rows = pl.DataFrame(
                {
                    "pair_id": pl.Series(pair_ids(urls, texts), dtype=pl.UInt64),
                    "image_uuid": [image_uuid(u) for u in urls],
                    "url": urls,
                    "text": texts,
                }
            )
            source = HttpImageSource(
                timeout=30,
                max_retries=0,
                allow_loopback_for_tests=True,
                max_per_host=args.workers,
                max_connections=args.workers,
            )
            # CPU-only reference: decode + resize + encode of the same bytes on one thread, no network/tar
            cfg = ProcessConfig(args.image_size, args.resize_mode, args.jpeg_quality)
            c0 = cpu_seconds()
            for data in originals:
                process_image(data, cfg)
            decode_per_core = len(originals) / (cpu_seconds() - c0)

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
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        finally:
            server.terminate()
            server.join(5)
        assert res.ok == args.n, res.counts
    print(
        f"RESULT acquisition: samples={res.ok} shards={len(res.shards)} wall={wall:.2f}s cpu={cpu:.2f}s "
        f"samples/s={res.ok / wall:.1f} samples/s/core={res.ok / cpu:.1f} "
        f"decode+resize+encode only={decode_per_core:.1f}/s/core | {args.resize_mode} {args.image_size}px "
        f"q{args.jpeg_quality}, workers={args.workers}, input {total_bytes / args.n / 1024:.0f} KiB/img "
        f"(COCO ~640x480), cores={os.cpu_count()}, python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
