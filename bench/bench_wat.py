"""WAT -> image-alt rows: our fast reader vs `zcat file > /dev/null` vs the warcio + json reference.

Competitors on the same generated WAT file (bench/gen_wat.py, real CC layout), one process, interleaved, order
rotated each round, medians:
  zcat:      ``zcat FILE > /dev/null`` (a subprocess; the floor every reader must beat to be "IO-bound")
  ours:      `metaclip_assets.crawl.wat.read_wat` (own gzip-member framing + `"IMG@/src` pre-check + the
             compiled row builder `_native.rows`), returning the pool DataFrame (pair ids, uuids included)
  ours, Python rows: the same with compiled=False (orjson + `rows_from_wat_json`, the compiled path's reference)
  reference: `read_wat_reference` (warcio + json, every record parsed)
  parse-only floors (no rows: no URL resolution, text cleaning, pair ids or DataFrame), to split the cost:
    FastWARC + orjson: the issue's reference point (FastWARC framing of metadata records, orjson of the payloads
               containing ``"IMG@/src``);
    ours, parse only: our framing + the same pre-check + orjson.
Exactness: ours and the reference return identical DataFrames (every row, every column) and identical stats.
Target: ours <= 1.2x the zcat time. 1 core: POLARS_MAX_THREADS=1.

Usage: .venv/bin/python bench/bench_wat.py [--mib 128] [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import orjson  # noqa: E402
from gen_wat import generate_wat  # noqa: E402

from metaclip_assets import settings  # noqa: E402
from metaclip_assets.crawl import framing, wat  # noqa: E402

WORKDIR = settings.bench_dir()


def wat_file(mib: float, seed: int, entries: int, workdir: Path = WORKDIR) -> tuple[Path, dict | None]:
    """The generated WAT for these parameters, generated once and cached (the generator is deterministic)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"bench-{mib:g}mib-s{seed}-e{entries}.warc.wat.gz"
    if path.exists():
        return path, None
    tmp = path.with_suffix(".tmp")
    info = generate_wat(tmp, mib, seed, entries)
    tmp.rename(path)
    return path, info


def wat_parser(doc: str) -> argparse.ArgumentParser:
    """The flags the WAT benchmarks share (this one and bench_e2e.py)."""
    ap = C.parser(doc)
    ap.add_argument("--mib", type=float, default=128, help="uncompressed WAT size (MiB)")
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    return ap


def open_wat(args: argparse.Namespace) -> tuple[dict[str, str], Path]:
    """Machine info and the (cached) generated WAT file of `args`, both printed."""
    info = C.machine_info()
    print(info)
    path, gen = wat_file(args.mib, args.seed, args.entries, args.workdir)
    print(f"WAT file {path} ({path.stat().st_size / 2**20:.1f} MiB gzipped){' generated: ' + str(gen) if gen else ''}")
    return info, path


def zcat(path: Path) -> None:
    exe = shutil.which("zcat") or "zcat"
    with open(os.devnull, "wb") as null:
        subprocess.run([exe, str(path)], stdout=null, check=True)


def parse_only_fastwarc(path: Path) -> int:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    n = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.metadata, parse_http=False):
            payload = rec.reader.read()
            if wat.IMG_MARK in payload:
                orjson.loads(payload)
                n += 1
    return n


def parse_only_ours(path: Path) -> int:
    n = 0
    for _, block, data, start, end in framing.iter_warc_records(path, wat.ReadStats()):
        if (framing.warc_header(block, b"WARC-Type") or b"").lower() == b"metadata" and data.find(
            wat.IMG_MARK, start, end
        ) >= 0:
            orjson.loads(memoryview(data)[start:end])
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    args = wat_parser(__doc__).parse_args(argv)
    info, path = open_wat(args)

    kw = dict(snapshot="CC-MAIN-2024-22", source_name=path.name)
    fast, fstats = wat.read_wat(path, **kw, compiled=True)
    pyrows, pstats = wat.read_wat(path, **kw, compiled=False)
    ref, rstats = wat.read_wat_reference(path, **kw)
    for name, df, st in (("compiled rows", fast, fstats), ("Python rows", pyrows, pstats)):
        assert df.equals(ref), f"fast WAT reader ({name}) and warcio + json reference disagree"
        assert st.as_dict() == rstats.as_dict(), (name, st.as_dict(), rstats.as_dict())
    print(f"exactness: {fast.height:,} rows identical (all columns), stats identical: {fstats.as_dict()}")
    assert parse_only_fastwarc(path) == parse_only_ours(path), "parse-only floors parsed different record counts"

    z, ours_k, py_k, ref_k = (
        "zcat > /dev/null",
        "ours: read_wat (own framing + pre-check + compiled rows)",
        "ours, Python rows: read_wat(compiled=False) (+ orjson)",
        "reference: warcio + json",
    )
    fw_k, po_k = "parse only: FastWARC + orjson (no rows)", "parse only: ours (no rows)"
    competitors = {
        z: lambda: zcat(path),
        ours_k: lambda: wat.read_wat(path, **kw, compiled=True),
        py_k: lambda: wat.read_wat(path, **kw, compiled=False),
        ref_k: lambda: wat.read_wat_reference(path, **kw),
        fw_k: lambda: parse_only_fastwarc(path),
        po_k: lambda: parse_only_ours(path),
    }
    times, loads = C.interleaved(competitors, args.rounds)
    med = {k: C.median(v) for k, v in times.items()}
    cpu = {k: C.median(v) for k, v in times.cpu.items()}
    rows = [
        [
            k,
            f"{v:.2f}",
            f"{cpu[k]:.2f}",
            C.rate(fstats.records_read, v),
            C.rate(fast.height, v) if k != z else "-",
            f"{v / med[z]:.2f}x",
            f"{cpu[k] / cpu[z]:.2f}x",
        ]
        for k, v in med.items()
    ]
    table = C.md_table(
        "competitor|median wall s|median CPU s|records/s|image-text rows/s|x zcat (wall)|x zcat (CPU)",
        rows,
    )
    ratio = med[ours_k] / med[z]
    body = (
        f"WAT: {path.stat().st_size / 2**20:.1f} MiB gzipped, {args.mib:g} MiB raw (bench/gen_wat.py seed "
        f"{args.seed}), {fstats.records_read:,} records, {fstats.images_seen:,} IMG links, {fast.height:,} "
        f"image-text rows; rows and stats identical; {args.rounds} rounds.\n\n{table}\n\n"
        f"Target ours <= 1.2x zcat: {ratio:.2f}x wall, {cpu[ours_k] / cpu[z]:.2f}x CPU "
        f"({'met' if ratio <= 1.2 else 'MISSED'}); Python rows {cpu[py_k] / cpu[z]:.2f}x CPU; reference "
        f"{med[ref_k] / med[z]:.2f}x; parse-only floors: FastWARC + orjson {cpu[fw_k] / cpu[z]:.2f}x, ours "
        f"{cpu[po_k] / cpu[z]:.2f}x CPU.\n"
    )
    C.report("WAT parsing", info, body, loads, args.record)


if __name__ == "__main__":
    main()
