"""The acquisition asset logic without Dagster: settings defaults, rows per shard, progress lines, the checks on
a folder `acquire` wrote (and damaged copies of it), the snapshot summary and its Markdown."""

from __future__ import annotations

import inspect
import io
from dataclasses import asdict

import polars as pl
import pytest
from PIL import Image

from metaclip_assets import layout
from metaclip_assets.acquisition import HttpImageSource, ProcessConfig, acquire, checks, report, steps
from metaclip_assets.acquisition.source import REASONS, FetchResult
from metaclip_assets.storage import Storage
from metaclip_assets_tests.acquisition import _support as sup

SNAP = "TEST-2024-01"


class _Memory:
    """An image source over a dict: url -> bytes; anything else is a 404."""

    def __init__(self, bodies: dict[str, bytes]):
        self.bodies = bodies

    def fetch(self, url: str) -> FetchResult:
        body = self.bodies.get(url)
        if body is None:
            return FetchResult(url, False, 404, None, None, "http_4xx", 0.0, detail="not here")
        return FetchResult(url, True, 200, "image/png", body, "ok", 0.0)


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40 + i, 30), (10 * i, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def acquired(tmp_path):
    """A data root with one acquired shard: 6 images (two captions for some), one URL missing."""
    pairs = [(f"https://img.example/{i}.png", f"caption {i}") for i in range(6)]
    pairs += [("https://img.example/0.png", "second caption"), ("https://img.example/gone.png", "lost")]
    rows = sup.curated_rows(pairs, SNAP)
    source = _Memory({f"https://img.example/{i}.png": _png(i) for i in range(6)})
    storage = Storage(tmp_path)
    out = storage.local_path(layout.shards_dir(SNAP))
    result = acquire(rows, source, out, snapshot=SNAP, shard=1, samples_per_shard=3, image_size=16, workers=2)
    return storage, rows, result


def test_settings_take_the_plain_defaults():
    http = inspect.signature(HttpImageSource.__init__).parameters
    s = steps.SourceSettings()
    assert (s.timeout_s, s.max_bytes, s.max_retries, s.backoff_s, s.max_backoff_s) == (
        http["timeout"].default,
        http["max_bytes"].default,
        http["max_retries"].default,
        http["backoff"].default,
        http["max_backoff"].default,
    )
    assert (s.max_redirects, s.max_connections, s.max_per_host, s.user_agent) == (
        http["max_redirects"].default,
        http["max_connections"].default,
        http["max_per_host"].default,
        http["user_agent"].default,
    )
    assert s.kind == "warc" and s.warc_globs == [layout.IMAGE_WARC_GLOB]
    process = ProcessConfig()
    shard = steps.ShardSettings()
    assert (shard.resize_mode, shard.jpeg_quality, shard.max_pixels, shard.min_image_size) == (
        process.resize_mode,
        process.jpeg_quality,
        process.max_pixels,
        process.min_image_size,
    )
    assert shard.image_size == 224 and shard.samples_per_shard == 10_000  # the assets' defaults, not acquire()'s
    assert list(asdict(shard)) == [p for p in inspect.signature(acquire).parameters if p in asdict(shard)]


def test_source_settings_worker_count_and_errors(tmp_path):
    assert steps.SourceSettings(kind="http").worker_count() == 32
    assert steps.SourceSettings(workers=3).worker_count() == 3
    assert steps.SourceSettings().worker_count() >= 2
    with pytest.raises(ValueError, match="'warc' or 'http'"):
        steps.SourceSettings(kind="ftp").open(Storage(tmp_path), SNAP)
    with pytest.raises(FileNotFoundError, match="no WARC files"):
        steps.SourceSettings().open(Storage(tmp_path), SNAP)


def test_rows_for_shard_splits_by_image():
    pairs = [(f"https://img.example/{i % 9}.png", f"caption {i}") for i in range(40)]
    rows = sup.curated_rows(pairs, SNAP)
    parts = [steps.rows_for_shard(rows, s, 4) for s in range(4)]
    assert sum(len(p) for p in parts) == len(rows)
    assert sorted(pl.concat(parts)["pair_id"].to_list()) == sorted(rows["pair_id"].to_list())
    shards_of_image = {}
    for s, part in enumerate(parts):
        for uuid in part["image_uuid"].unique().to_list():
            assert shards_of_image.setdefault(uuid, s) == s  # an image's captions stay in one shard


def test_progress_logger_reports_the_end_and_throttles(monkeypatch):
    lines: list[str] = []
    report_progress = steps.progress_logger(lines.append, "S shard 000/4", total=10)
    report_progress({"ok": 2}, 1.0)  # the first call always logs
    report_progress({"ok": 3}, 1.0)  # within PROGRESS_EVERY_S: quiet
    report_progress({"ok": 8, "http_4xx": 2}, 2.5)  # done: always logs
    assert lines == [
        "S shard 000/4: 2/10 rows (20%), ok 2, failed {}, 1.0 rows/s",
        "S shard 000/4: 10/10 rows (100%), ok 8, failed {'http_4xx': 2}, 2.5 rows/s",
    ]


def test_checks_pass_on_what_acquire_wrote(acquired):
    storage, rows, result = acquired
    lost = checks.nothing_lost(storage, rows, SNAP, 1)
    assert lost.name == checks.NOTHING_LOST and lost.passed and lost.severity == "ERROR"
    assert lost.metadata["input_rows"] == len(rows) and lost.metadata["failure_rows"] == 1
    readable = checks.shards_readable(storage, SNAP, 1)
    assert readable.name == checks.SHARDS_READABLE and readable.passed, readable.metadata
    assert readable.metadata["tars"] == len(result.shards) and readable.metadata["samples_read"] == result.ok


def test_checks_fail_on_damaged_folders(acquired):
    storage, rows, result = acquired
    invented = checks.nothing_lost(storage, rows.slice(1), SNAP, 1)
    assert not invented.passed and invented.metadata["invented"] == 1
    result.shards[0].unlink()
    readable = checks.shards_readable(storage, SNAP, 1)
    assert not readable.passed and readable.metadata["missing_tars"] == [result.shards[0].name]


def test_accounts_for_curated_subset_names_stray_tars_and_stale_pairs():
    index = pl.DataFrame({"pair_id": [1, 2], "tar": ["a-000-00000.tar", "a-000-00000.tar"]})
    failures = pl.DataFrame({"pair_id": [3]})
    ok = checks.accounts_for_curated_subset(pl.Series([1, 2, 3]), index, failures, ["a-000-00000.tar"])
    assert ok.name == checks.ACCOUNTS_FOR_CURATED_SUBSET and ok.passed
    bad = checks.accounts_for_curated_subset(pl.Series([1, 2, 4]), index, failures, ["a-000-00000.tar", "x.tar"])
    assert not bad.passed
    assert (bad.metadata["unaccounted"], bad.metadata["not_in_curated"], bad.metadata["stray_tars"]) == (
        1,
        1,
        ["x.tar"],
    )


def _shard_stats(shard: int, config: dict) -> dict:
    return {
        "shard": shard,
        "rows": 2,
        "ok": 1,
        "success_rate": 0.5,
        "reasons": {"ok": 1, "http_4xx": 1},
        "shards_written": 1,
        "shards_skipped": 0,
        "elapsed_s": 0.1,
        "rows_per_s": 20.0,
        "tars": ["t.tar"],
        "tar_bytes": 1_000,
        "source": {"kind": "warc", "warc_files": ["a.warc.gz"], "urls_indexed": 3},
        "config": config,
    }


def test_summary_and_markdown():
    index = pl.DataFrame(
        {"reason_code": ["ok", "ok"], "sha256": ["s", "s"], "image_uuid": ["u1", "u2"], "url": ["http://a", "http://b"]}
    )
    failures = pl.DataFrame(
        {"reason_code": ["http_4xx", "http_4xx"], "url": ["http://c", "http://c"], "detail": ["404", "404"]}
    ).with_columns(key=pl.Series(["k2", "k1"]))
    cfg = {"image_size": 64, "resize_mode": "center_crop", "jpeg_quality": 95}
    s = report.summarize(SNAP, [_shard_stats(0, cfg), _shard_stats(1, cfg)], index, failures)
    assert (s["rows"], s["ok"], s["failed"], s["success_rate"], s["images"]) == (4, 2, 2, 0.5, 3)
    assert s["reasons"] == {"http_4xx": 2, "ok": 2} and s["cross_shard_duplicate_images"] == 1
    assert s["config"] == cfg and s["tars"] == 2 and s["tar_bytes"] == 2_000
    assert s["failure_examples"] == {"http_4xx": [{"url": "http://c", "detail": "404"}]}
    assert [p["tars"] for p in s["per_shard"]] == [1, 1]
    md = report.report_markdown(s)
    assert md.startswith("## Image acquisition") and "WARC replay of 1 file(s), 3 URLs indexed" in md
    assert "| `http_4xx` | 2 | 50.0% |" in md and "64 px, center_crop, JPEG quality 95" in md
    mixed = report.summarize(SNAP, [_shard_stats(0, cfg), _shard_stats(1, {**cfg, "image_size": 32})], index, failures)
    assert "mixed" in mixed["config"] and "settings differ between shards" in report.report_markdown(mixed)


def test_write_report_needs_every_shard(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shards \[0, 1\] of X have no acquisition results yet"):
        report.write_report(Storage(tmp_path), "X", 2)


def test_report_shows_new_reasons_and_the_worker_plan(acquired):
    storage, rows, result = acquired
    plan = result.as_metadata()["workers"]
    assert plan["decode_workers"] >= 1 and plan["memory_budget"] > 0 and plan["cpus"] >= 1
    index = pl.DataFrame({"reason_code": ["ok"], "sha256": ["s"], "image_uuid": ["u1"], "url": ["http://a"]})
    failures = pl.DataFrame(
        {
            "reason_code": ["truncated", "bad_redirect", "decode_memory"],
            "url": ["http://b", "http://c", "http://d"],
            "detail": ["cut", "Location 'http://[::1'", "needs ~900 MiB"],
            "key": ["k1", "k2", "k3"],
        }
    )
    cfg = {"image_size": 64, "resize_mode": "center_crop", "jpeg_quality": 95}
    stats = [_shard_stats(0, cfg) | {"workers": plan}, _shard_stats(1, cfg) | {"workers": plan}]
    s = report.summarize(SNAP, stats, index, failures)
    md = report.report_markdown(s)
    for reason in ("truncated", "bad_redirect", "decode_memory"):
        assert f"| `{reason}` | 1 | 25.0% | {REASONS[reason]} |" in md
    assert s["transient_failures"] == 1  # truncated: a cut connection may heal
    assert f"Shard(s) 0, 1: {plan['workers']} fetch / {plan['decode_workers']} decode workers" in md
    assert "MiB worst-case decodes" in md and plan["memory_source"] in md
