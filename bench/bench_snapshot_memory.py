"""Wall, CPU and peak RSS of every curation step through `dagster asset materialize`, for generated snapshots of
K WAT files (one per shard, B = K buckets): the memory of a step must not grow with the snapshot.

For each K: a fresh DAGSTER_HOME and data root; K generated WAT files (bench/gen_wat.py, seeds 0..K-1, cached in
$METACLIP_BENCH_DIR) named so that each shard of METACLIP_NUM_SHARDS=K gets exactly one; then, one process per
command, every command run under GNU time (`/usr/bin/time`: wall, user+sys and max RSS of the command's process
tree): `metaclip-assets register-snapshot`, `metadata_entries` (the 500k-entry surrogate, bench/gen_metadata.py,
as a ready metadata.json), `crawl_pool,matched_pool` over the partition range of all K shards (one run: the
matcher is built once), then `entry_counts`, `balanced_subset` and `data_card` each in its own run. Every run
uses the in-process executor (as scripts/run-sample.sh) and POLARS_MAX_THREADS=1. Pairs = the pool's image-text
pairs (what bench_e2e.py counts); pairs per CPU-second counts every command's CPU.

Optionally (--full-mib 1331) one full-size WAT file (~1.3 GiB uncompressed, CommonCrawl's size) through every step
as a one-shard, one-bucket snapshot: the per-step memory at the size of a real shard and bucket.

Usage: .venv/bin/python bench/bench_snapshot_memory.py [--files 4 16] [--mib 64] [--full-mib 0] [--record]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_wat import WORKDIR, wat_file  # noqa: E402
from gen_metadata import generate_metadata  # noqa: E402

from metaclip_assets import layout  # noqa: E402
from metaclip_assets.sharding import shard_keys, shard_of  # noqa: E402
from metaclip_assets.storage import Storage  # noqa: E402

BIN = Path(sys.executable).parent
SNAPSHOT = "CC-MAIN-2024-22"
INPROC = {"execution": {"config": {"in_process": {}}}}
SNAPSHOT_STEPS = ("entry_counts", "balanced_subset", "data_card")
GNU_TIME = "/usr/bin/time"


def shard_file_names(num_shards: int) -> list[str]:
    """One CC-style WAT file name per shard (shards are a hash of the name): name i lands in shard i."""
    names: dict[int, str] = {}
    i = 0
    while len(names) < num_shards:
        name = f"CC-MAIN-20240517233122-20240518023122-{i:05d}.warc.wat.gz"
        names.setdefault(shard_of(name, num_shards), name)
        i += 1
    return [names[s] for s in range(num_shards)]


def measured(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run `cmd` under GNU time; wall, user+sys CPU and peak RSS (the largest process of its tree, ru_maxrss of
    the waited children, so not the parent's size at fork) of the command alone."""
    if not Path(GNU_TIME).exists():
        sys.exit(f"{GNU_TIME} is missing: install GNU time (apt-get install time); it measures each command's peak RSS")
    stats = log.with_suffix(".time")
    with log.open("w") as out:
        proc = subprocess.run(
            [GNU_TIME, "-f", "%e %U %S %M", "-o", str(stats), *cmd], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}\nfull log: {log}")
    wall, user, system, max_kib = stats.read_text().split()[-4:]
    return {"wall": float(wall), "cpu": float(user) + float(system), "rss_mb": int(max_kib) / 1024}


def materialize(select: str, partition: list[str], config: dict | None = None) -> list[str]:
    return [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "metaclip_assets.definitions",
        "--select",
        select,
        *partition,
        "--config-json",
        json.dumps({**INPROC, **(config or {})}),
    ]


def metadata_json(workdir: Path, entries: int) -> Path:
    path = workdir / f"metadata-e{entries}.json"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(generate_metadata(entries)[0]))
    return path


def curate(wats: list[Path], entries: int, workdir: Path, tmp: Path) -> dict:
    """Every curation command for a snapshot of these WAT files, one file per shard; returns step -> figures."""
    k = len(wats)
    home, root = tmp / "dagster_home", tmp / "data"
    home.mkdir(parents=True)
    crawl = root / layout.crawl_dir(SNAPSHOT)
    crawl.mkdir(parents=True)
    for wat, name in zip(wats, shard_file_names(k)):
        os.link(wat, crawl / name)  # same file system as the bench cache: no copy
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "METACLIP_DATA_ROOT": str(root),
        "METACLIP_NUM_SHARDS": str(k),
        "POLARS_MAX_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("METACLIP_NUM_BUCKETS", None)  # the default: one bucket per shard
    keys = shard_keys(k)
    md_config = {"ops": {"metadata_entries": {"config": {"use_wordnet": False, "metadata_json": ""}}}}
    md_config["ops"]["metadata_entries"]["config"]["metadata_json"] = str(metadata_json(workdir, entries))
    commands = {
        "register-snapshot": [str(BIN / "metaclip-assets"), "register-snapshot", SNAPSHOT],
        "metadata_entries": materialize("metadata_entries", [], md_config),
        "crawl_pool+matched_pool": materialize(
            "crawl_pool,matched_pool", ["--partition-range", f"{keys[0]}|{SNAPSHOT}...{keys[-1]}|{SNAPSHOT}"]
        ),
    }
    commands |= {step: materialize(step, ["--partition", SNAPSHOT]) for step in SNAPSHOT_STEPS}
    figures = {}
    for step, cmd in commands.items():
        figures[step] = measured(cmd, env, tmp / f"{step}.log")
        print(f"  K={k} {step}: {figures[step]}", flush=True)
    storage = Storage(root)
    figures["pairs"] = sum(storage.read_json(layout.pool_stats_key(SNAPSHOT, s, k))["pairs"] for s in range(k))
    figures["raw_mib"] = sum(w.stat().st_size for w in wats) / 2**20  # compressed; the raw size is --mib * K
    counts = storage.read_json(layout.counts_summary_key(SNAPSHOT, k, k))
    figures["matched"] = counts["matched_pairs"]
    figures["largest_bucket"] = counts["largest_bucket_pairs"]
    figures["curated"] = storage.read_json(layout.balanced_summary_key(SNAPSHOT, k, k))["curated"]
    return figures


def main(argv: list[str] | None = None) -> None:
    ap = C.parser(__doc__, rounds=1)
    ap.add_argument("--files", type=int, nargs="*", default=[4, 16], help="snapshot sizes K (files = shards)")
    ap.add_argument("--mib", type=float, default=64, help="uncompressed size of each generated WAT file (MiB)")
    ap.add_argument("--entries", type=int, default=500_000)
    ap.add_argument("--full-mib", type=float, default=0, help="also one WAT of this size through one shard (1331)")
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    args = ap.parse_args(argv)
    info = C.machine_info()
    t0 = time.perf_counter()
    wats = [wat_file(args.mib, seed, args.entries, args.workdir)[0] for seed in range(max(args.files, default=0))]
    print(f"{len(wats)} WAT files of {args.mib:g} MiB ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    results: dict[int, dict] = {}
    for k in args.files:
        with tempfile.TemporaryDirectory(prefix=f"snapmem-k{k}-") as tmp:
            results[k] = curate(wats[:k], args.entries, args.workdir, Path(tmp))
    full = None
    if args.full_mib:
        big, _ = wat_file(args.full_mib, 0, args.entries, args.workdir)
        with tempfile.TemporaryDirectory(prefix="snapmem-full-") as tmp:
            full = curate([big], args.entries, args.workdir, Path(tmp))
    body = report(results, args.mib, full, args.full_mib)
    C.report("Snapshot curation memory through Dagster", info, body, [C.loadavg()], args.record)


STEPS = ("register-snapshot", "metadata_entries", "crawl_pool+matched_pool", *SNAPSHOT_STEPS)


def report(results: dict[int, dict], mib: float, full: dict | None, full_mib: float) -> str:
    ks = sorted(results)
    lines = []
    if ks:
        rows = [
            [step, k, f"{f['wall']:.1f}", f"{f['cpu']:.1f}", f"{f['rss_mb']:,.0f}"]
            for step in STEPS
            for k in ks
            for f in [results[k][step]]
        ]
        lines += [
            f"K generated WAT files of {mib:g} MiB (uncompressed), one per shard, METACLIP_NUM_SHARDS=K, buckets = "
            "K; 500k-entry surrogate metadata; one `dagster asset materialize` process per row (in-process "
            "executor); peak RSS = max RSS of the command's process tree (GNU time).",
            "",
            C.md_table("step|K|wall s|CPU s|peak RSS MiB", rows),
            "",
        ]
        lo = ks[0]
        peak_lo = max(results[lo][s]["rss_mb"] for s in STEPS)
        summary = []
        for k in ks:
            r = results[k]
            cpu, peak = sum(r[s]["cpu"] for s in STEPS), max(r[s]["rss_mb"] for s in STEPS)
            summary.append(
                [k, r["pairs"], r["matched"], r["curated"], r["largest_bucket"], f"{sum(r[s]['wall'] for s in STEPS):.1f}",
                 f"{cpu:.1f}", C.rate(r["pairs"], cpu), f"{peak:,.0f}", f"{peak / peak_lo:.2f}"]
            )  # fmt: skip
        lines += [
            C.md_table(
                f"K|pool pairs|matched (dedup)|curated|largest bucket|wall s (all)|CPU s (all)|pairs/CPU-s|"
                f"peak RSS MiB (all)|peak vs K={lo}",
                summary,
            ),
            "",
        ]
        if len(ks) > 1:
            ratios = [
                [s, *(f"{results[k][s]['rss_mb'] / results[lo][s]['rss_mb']:.2f}" for k in ks[1:])] for s in STEPS
            ]
            lines += [C.md_table("peak RSS ratio|" + "|".join(f"K={k} / K={lo}" for k in ks[1:]), ratios), ""]
    if full is not None:
        rows = [[s, f"{full[s]['wall']:.1f}", f"{full[s]['cpu']:.1f}", f"{full[s]['rss_mb']:,.0f}"] for s in STEPS]
        f = full["crawl_pool+matched_pool"]
        lines += [
            f"One {full_mib:g} MiB WAT ({full['raw_mib']:.0f} MiB gzip) as a one-shard, one-bucket snapshot: "
            f"{full['pairs']:,} pool pairs, {full['matched']:,} matched, {full['curated']:,} curated; "
            f"crawl_pool+matched_pool {C.rate(full['pairs'], f['cpu'])} pairs per CPU-s of that command.",
            "",
            C.md_table("step|wall s|CPU s|peak RSS MiB", rows),
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
