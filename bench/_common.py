"""Shared helpers for the benchmark scripts: interleaved timing, machine facts, markdown tables, results file.

Method (performance.md): all competitors of one benchmark run in ONE process, interleaved, with the order rotated
every round; medians over the rounds are reported and compared as ratios, because on a shared 2-core machine
absolute times move by up to ~1.5x with the neighbours' load. The load average is recorded next to every result.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "RESULTS.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, str]:
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(usable_cores()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load average (start)": loadavg(),
    }


def command_line() -> str:
    """The command as typed from the repo root, for the results file."""
    exe = os.path.relpath(sys.executable, REPO_ROOT) if sys.executable.startswith(str(REPO_ROOT)) else sys.executable
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO_ROOT)
    return " ".join(shlex.quote(a) for a in [exe, script, *sys.argv[1:]])


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (pool workers are reaped when the pool closes)."""
    t = os.times()  # children: 10 ms ticks; this process: process_time's finer clock
    return time.process_time() + t.children_user + t.children_system


class Timings(dict):
    """name -> list of wall seconds; ``.cpu`` holds name -> list of CPU seconds (this process + reaped children)."""

    cpu: dict[str, list[float]]


def interleaved(
    competitors: dict[str, Callable[[], object]], rounds: int, log: Callable[[str], None] | None = print
) -> tuple[Timings, list[str]]:
    """Run every competitor once per round, rotating the order each round; returns times and per-round loads.

    Rotation puts each competitor first (cold caches, a neighbour's burst) as often as the others. CPU time is
    recorded beside wall time: on a shared machine a neighbour stretches wall time but not (much) CPU time, so
    single-process ratios are also reported on CPU seconds.
    """
    names = list(competitors)
    times = Timings({n: [] for n in names})
    times.cpu = {n: [] for n in names}
    loads: list[str] = []
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        loads.append(loadavg())
        for name in order:
            c0, t0 = cpu_seconds(), time.perf_counter()
            competitors[name]()
            dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
            times[name].append(dt)
            times.cpu[name].append(dc)
            if log:
                log(f"  round {r + 1}/{rounds} {name}: {dt:.3f} s wall, {dc:.3f} s CPU")
    return times, loads


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def md_table(headers: str | Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; `headers` as a list or as one "a|b|c" string."""
    if isinstance(headers, str):
        headers = headers.split("|")

    def fmt(v: object) -> str:  # no scientific notation for the magnitudes benchmarks report
        if isinstance(v, str):
            return v
        if isinstance(v, int):
            return f"{v:,}"
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"

    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rate(n: float, seconds: float) -> str:
    r = n / seconds
    return f"{r / 1e6:.2f}M" if r >= 1e6 else f"{r / 1e3:.1f}k" if r >= 1e3 else f"{r:.1f}"


def _status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: a child's ru_maxrss after fork+exec can still report the
    parent's size at fork time, whereas VmHWM belongs to the exec'd address space."""
    hwm = _status_mb("VmHWM")
    if hwm == hwm:  # not NaN
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def report(title: str, info: dict[str, str], body: str, loads: Sequence[str], record_it: bool) -> None:
    """Print a benchmark's result and, with --record, append it to RESULTS.md."""
    print(body)
    if record_it:
        record(title, info, body, loads)


def record(title: str, info: dict[str, str], body: str, loads: Sequence[str], path: Path = RESULTS) -> None:
    """Append one dated section to bench/RESULTS.md (newest last)."""
    meta = "\n".join(f"- {k}: {v}" for k, v in info.items())
    section = (
        f"\n## {title} ({info['date']})\n\n"
        f"Command: `{command_line()}`\n\n{meta}\n- load average per round: {', '.join(loads)}\n"
        f"- load average (end): {loadavg()}\n\n{body}\n"
    )
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the bench scripts with `--record`; newest last.\n")
    with path.open("a") as fh:
        fh.write(section)
    print(f"recorded in {path}")


# ---- how far this machine lets 2 processes scale -------------------------------------------------------------------
# The shared 2-vCPU machine does not always give 2x for 2 processes (co-tenants, possibly SMT siblings on the host):
# a trivially parallel pure-Python loop measured 1.30-1.74x here. Benchmarks that report a multi-process speedup time
# this loop in the same rounds so that the ceiling under the same conditions stands beside the result.


def parser(doc: str, rounds: int = 3) -> argparse.ArgumentParser:
    """An argument parser with the flags every curation benchmark takes: --rounds, --seed, --record."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    return ap


def timed(fn: Callable, *args: object) -> tuple[object, float]:
    """(fn(*args), wall seconds it took): for one-off builds reported beside the timed rounds."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def run_child(code_template: str, *args: object) -> dict:
    """Run `code_template` (formatted with bench=<this folder>) in a fresh one-thread-polars Python process and
    return the JSON of its last stdout line: memory measurements need a process of their own."""
    import json
    import subprocess

    code = code_template.format(bench=str(BENCH_DIR))
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def spin(n: int) -> int:
    s = 0
    for i in range(n):
        s += i
    return s


class SpinCalibration:
    """``one()`` runs the loop once in this process, ``many()`` runs it once in each of ``procs`` forked workers
    at the same time; the machine's scaling is ``procs * t_one / t_many``."""

    def __init__(self, procs: int = 2, n: int = 12_000_000) -> None:
        import multiprocessing

        self.procs, self.n = procs, n
        self._pool = multiprocessing.get_context("fork").Pool(procs)  # pure Python in the children: fork is safe

    def one(self) -> int:
        return spin(self.n)

    def many(self) -> list[int]:
        return self._pool.map(spin, [self.n] * self.procs, chunksize=1)

    def close(self) -> None:
        self._pool.close()
        self._pool.join()
