"""Pool ids (blake2b-64 pair ids + sha224 image uuids) of ~200k WAT rows: both hashes from libraries.

The rule (issue 13): a hand-written hash in C stays only if a library is too slow for that path. The C BLAKE2b that
`_native` had was ~1% of the end-to-end CPU faster than hashlib's (RESULTS.md, 2026-12-06 03:04 UTC), so it went;
both hashes now come from libraries. Competitors on the same rows, one process, interleaved, order rotated each
round, medians; each call gets the rows of one WAT file, as `PoolColumns.to_frame` does:
  (a) the default path: `pool.pair_ids` (hashlib's BLAKE2b-64, one copied empty state per row) +
      `_native.image_uuids` (OpenSSL's libcrypto SHA-224 through EVP in one C loop, metaclip_assets/_native/ids.c).
  (b) hashlib: `pool.pair_ids` + `pool.image_uuids` (hashlib's sha224 per distinct URL), the path without _native.
  (a2) `pool.pair_ids` alone: what the pair ids cost in (a) and (b).
  (a3) pair ids with `hashlib.blake2b(data, digest_size=8)` per row (the pool.pair_ids before): why (a2) copies.
Exactness: every competitor returns the same pair ids and uuids as the reference formulas (checked before timing).
Rows: the (url, text) rows that `wat.read_wat` gives for bench/gen_wat.py's WAT (--mib, default 64: ~36k rows, one
e2e file), repeated file by file up to --rows. The cost per file is set beside bench_e2e's time for that file.

Usage: .venv/bin/python bench/bench_ids.py [--rows 200000] [--mib 64] [--rounds 5] [--record]
"""

from __future__ import annotations

import hashlib
import os
import ssl
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("POLARS_MAX_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_wat import WORKDIR, wat_file  # noqa: E402

from metaclip_assets import _native  # noqa: E402
from metaclip_assets.crawl import pool, wat  # noqa: E402


def default_ids(urls: list[str], texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """(a): what PoolColumns.to_frame computes when _native is built."""
    return pool.pair_ids(urls, texts), _native.image_uuids(urls)


def hashlib_ids(urls: list[str], texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """(b): what PoolColumns.to_frame computes without _native."""
    return pool.pair_ids(urls, texts), pool.image_uuids(urls)


def constructor_pair_ids(urls: list[str], texts: list[str]) -> np.ndarray:
    """(a3): the keyword constructor per row instead of a copied state."""
    b2 = hashlib.blake2b
    buf = b"".join([b2(f"{u}\x00{t}".encode(), digest_size=8).digest() for u, t in zip(urls, texts)])
    return np.frombuffer(buf, dtype="<u8")


def main(argv: list[str] | None = None) -> None:
    ap = C.parser(__doc__, rounds=5)
    ap.add_argument("--rows", type=int, default=200_000, help="rows in all (files of --mib repeated)")
    ap.add_argument("--mib", type=float, default=64, help="uncompressed WAT size of one file (MiB)")
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    ap.add_argument("--e2e-cpu-s", type=float, default=0.82, help="bench_e2e ours, CPU s for one 64 MiB file")
    ap.add_argument("--e2e-pairs", type=int, default=35_831, help="pairs of that file")
    args = ap.parse_args(argv)
    info = C.machine_info()
    info["openssl"] = ssl.OPENSSL_VERSION
    print(info)
    path, _ = wat_file(args.mib, args.seed, args.entries, args.workdir)
    frame, _ = wat.read_wat(path, snapshot="bench", source_name=path.name)
    file_urls, file_texts = frame["url"].to_list(), frame["text"].to_list()
    per_file = len(file_urls)
    n_files = max(1, round(args.rows / per_file))
    n_rows = per_file * n_files
    print(f"{per_file:,} rows per {args.mib:g} MiB file ({len(set(file_urls)):,} distinct urls), {n_files} files")

    # ---- competitors, exactness --------------------------------------------------------------------------------
    def per_file_calls(ids_fn):
        return lambda: [ids_fn(file_urls, file_texts) for _ in range(n_files)]

    competitors = {
        "(a) default: pool.pair_ids + _native.image_uuids": per_file_calls(default_ids),
        "(b) hashlib: pool.pair_ids + image_uuid": per_file_calls(hashlib_ids),
        "(a2) pool.pair_ids alone": per_file_calls(pool.pair_ids),
        "(a3) pair ids, blake2b(data, digest_size=8) per row": per_file_calls(constructor_pair_ids),
    }
    ref_ids = [
        int.from_bytes(hashlib.blake2b(u.encode() + b"\x00" + t.encode(), digest_size=8).digest(), "little")
        for u, t in zip(file_urls, file_texts)
    ]
    ref_uuids = [hashlib.sha224(u.encode()).hexdigest()[:24] for u in file_urls]
    for name, fn in [("(a)", default_ids), ("(b)", hashlib_ids)]:
        ids, uuids = fn(file_urls, file_texts)
        assert ids.tolist() == ref_ids and uuids == ref_uuids, f"{name} ids differ from the reference formulas"
    assert constructor_pair_ids(file_urls, file_texts).tolist() == ref_ids, "(a3) ids differ"
    print(f"exactness: pair ids and uuids identical for all {per_file:,} rows in all competitors")

    times, loads = C.interleaved(competitors, args.rounds)
    med = {k: C.median(v) for k, v in times.items()}
    cpu = {k: C.median(v) for k, v in times.cpu.items()}
    a = list(med)[0]
    e2e_file_s = args.e2e_cpu_s * per_file / args.e2e_pairs  # bench_e2e's CPU time for a file of these rows
    rows = [
        [
            k,
            f"{v:.3f}",
            f"{cpu[k]:.3f}",
            f"{cpu[k] / n_rows * 1e9:.0f}",
            C.rate(n_rows, cpu[k]),
            f"{cpu[k] / cpu[a]:.2f}x",
            f"{cpu[k] / n_files * 1e3:.1f}",
            f"{(cpu[k] - cpu[a]) / n_files / e2e_file_s:+.1%}",
        ]
        for k, v in med.items()
    ]
    headers = "competitor|median wall s|median CPU s|ns/row (CPU)|rows per CPU-s|CPU vs (a)|ms per file (CPU)"
    table = C.md_table([*headers.split("|"), "e2e CPU vs (a)"], rows)
    body = (
        f"{n_rows:,} rows: {n_files} x the {per_file:,} rows of one {args.mib:g} MiB WAT (bench/gen_wat.py seed "
        f"{args.seed}), one call per file; {args.rounds} rounds; outputs identical. {info['openssl']}.\n\n{table}\n\n"
        f"Last column: the extra CPU per file over (a), as a share of bench_e2e's ours for that file "
        f"({e2e_file_s:.2f} s CPU, from {args.e2e_cpu_s:g} s per {args.e2e_pairs:,} pairs); (a) itself is "
        f"{cpu[a] / n_files / e2e_file_s:.1%} of it.\n"
    )
    C.report("Pool ids: both hashes from libraries", info, body, loads, args.record)


if __name__ == "__main__":
    main()
