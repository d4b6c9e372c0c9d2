"""The bench/ scripts run on tiny inputs and their exactness checks pass (speed is never asserted here).

Each benchmark asserts, before timing, that all its competitors produce identical output; running it end to end on
tiny inputs therefore checks the generators, the competitors and those assertions. The two matching engines the
benchmark times separately are also compared on edge cases.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))


def run(script: str, *args: str, timeout: int = 120) -> str:
    res = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"POLARS_MAX_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, f"{script} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_gen_metadata_and_texts_deterministic(tmp_path):
    for name in ("a", "b"):
        run("gen_metadata.py", str(tmp_path / f"md_{name}.json"), "--entries", "3000")
        run("gen_texts.py", str(tmp_path / f"md_{name}.json"), str(tmp_path / f"tx_{name}.jsonl"), "--texts", "500")
    md = json.loads((tmp_path / "md_a.json").read_text())
    assert md == json.loads((tmp_path / "md_b.json").read_text())
    assert len(md) == 3000 and len(set(md)) == 3000 and md[:3] == ["0", "1", "2"]
    assert (tmp_path / "tx_a.jsonl").read_bytes() == (tmp_path / "tx_b.jsonl").read_bytes()
    assert len((tmp_path / "tx_a.jsonl").read_text().splitlines()) == 500


def test_gen_wat_layout(tmp_path):
    from warcio.archiveiterator import ArchiveIterator

    out = tmp_path / "x.warc.wat.gz"
    run("gen_wat.py", str(out), "--mib", "0.5", "--entries", "3000")
    raw = out.read_bytes()
    members = 0
    while raw:  # one gzip member per record, as in CC files
        d = __import__("zlib").decompressobj(31)
        d.decompress(raw)
        raw = d.unused_data
        members += 1
    with gzip.open(out, "rb") as f:
        recs = [
            (r.rec_type, r.rec_headers.get_header("Content-Type"), r.content_stream().read())
            for r in ArchiveIterator(f)
        ]
    assert members == len(recs) and recs[0][0] == "warcinfo" and (len(recs) - 1) % 3 == 0
    assert {t for t, _, _ in recs[1:]} == {"metadata"} and {c for _, c, _ in recs[1:]} == {"application/json"}
    docs = [json.loads(p) for _, _, p in recs[1:]]
    kinds = [d["Envelope"]["WARC-Header-Metadata"]["WARC-Type"] for d in docs]
    assert kinds[:3] == ["request", "response", "metadata"]
    imgs = [
        link
        for d in docs
        for link in d["Envelope"]["Payload-Metadata"]
        .get("HTTP-Response-Metadata", {})
        .get("HTML-Metadata", {})
        .get("Links", [])
        if link["path"] == "IMG@/src"
    ]
    assert imgs and any(link.get("alt") for link in imgs)
    assert b'"IMG@/src"' in gzip.decompress(out.read_bytes())  # '/' and '@' unescaped, like CC's writer


def test_bench_matching_runs_and_is_exact():
    out = run(
        "bench_matching.py", "--entries", "3000", "--texts", "1500", "--rounds", "1", "--no-rss", "--spin", "100000"
    )
    assert "pairs identical in (a)-(f)" in out and "| (c) ours Matcher.match_batch |" in out
    assert "The machine itself, same rounds:" in out


def test_bench_balancing_runs_and_is_exact():
    out = run("bench_balancing.py", "--rows", "200000", "--entries", "5000", "--rounds", "1")
    assert "exactness: counts identical; compiled == numpy passes" in out


def test_bench_wat_and_e2e_run_and_are_exact(tmp_path):
    out = run("bench_wat.py", "--mib", "0.5", "--entries", "3000", "--rounds", "1", "--workdir", str(tmp_path))
    assert "rows identical (all columns), stats identical" in out
    out = run(
        "bench_e2e.py", "--mib", "0.5", "--entries", "3000", "--rounds", "1", "--no-rss", "--workdir", str(tmp_path)
    )
    assert "matched rows identical in all outputs" in out


def test_bench_ids_runs_and_is_exact(tmp_path):
    args = ["--rows", "600", "--mib", "0.5", "--entries", "3000", "--rounds", "1", "--workdir", str(tmp_path)]
    out = run("bench_ids.py", *args)
    assert "pair ids and uuids identical" in out and "| (b) hashlib: pool.pair_ids + image_uuid |" in out


EDGE_METADATA = [
    "dog",
    "hot dog",
    "dog",
    "a  b",
    " x",
    "x ",
    "New York",
    "New York City",
    "U.S.",
    "a . b",
    "é",
    "dog's",
    "hot",
    "24/7",
]
EDGE_TEXTS = [
    "hot dog",
    "a  b",
    "x",
    " x",
    "x  ",
    "New York City!",
    "U.S.",
    "a.b",
    "e\u0301 é",
    "",
    "dog\tdog",
    "hot\ndog",
    "hot\r\ndog",
    "dog's 24/7",
    "Dog DOG dog.",
    "\x00 dog",
    "dog\ud800 hot",
]


@pytest.mark.parametrize("with_bad", [False, True])
def test_matching_engines_agree_on_edge_cases(with_bad):
    """bench_matching times the token-join engine (c) and the automaton engine (e): same output, also per text."""
    from metaclip_assets.curation.matching import Matcher

    texts = EDGE_TEXTS if with_bad else EDGE_TEXTS[:-2]  # NUL and a lone surrogate force the fallback paths
    m = Matcher(EDGE_METADATA)
    off, ids = m.match_batch(texts)
    got = m._match_batch_automaton(texts)
    assert np.array_equal(got[0], off) and np.array_equal(got[1], ids) and got[1].dtype == np.uint32
    assert [m.match_batch([t])[1].tolist() for t in texts] == [m.match(t) for t in texts]


@pytest.mark.slow
def test_bench_snapshot_memory_runs_on_a_tiny_snapshot(tmp_path):
    """Every curation command through `dagster asset materialize`, measured: the script's table comes out."""
    if not Path("/usr/bin/time").exists():
        pytest.skip("/usr/bin/time (GNU time) is not installed: the script measures each command with it")
    out = run(
        "bench_snapshot_memory.py",
        *("--files", "2", "--mib", "0.5", "--entries", "3000", "--workdir", str(tmp_path)),
        timeout=300,
    )
    assert "entry_counts" in out and "data_card" in out
