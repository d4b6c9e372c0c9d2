"""The GPU training benchmark also runs on CPU (tiny model, toy shards, a few steps): a smoke check of its code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_training.py"


@pytest.mark.slow
def test_bench_training_cpu_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_training", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--cpu-smoke"])
    for kind in ("shards", "synthetic"):
        assert result[kind]["device"] == "cpu" and result[kind]["samples_per_s"] > 0
    assert result["ratio"] > 0
    assert "shards / synthetic" in capsys.readouterr().out
