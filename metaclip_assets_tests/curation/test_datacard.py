"""The data card's bad-record table: every skip reason of the readers, none dropped (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from metaclip_assets.crawl import pool
from metaclip_assets.crawl.pool import OTHER_SKIPS, SKIP_REASONS
from metaclip_assets.curation.datacard import build_datacard, datacard_markdown

CRAWL = Path(pool.__file__).parent


def _card(bad: dict[str, int], other: dict[str, int]):
    counts = np.array([3, 1, 0], dtype=np.uint64)
    return build_datacard(
        snapshot="CC-MAIN-2024-22",
        entries=["a", "b", "c"],
        metadata_sha256="0" * 64,
        counts_before=counts,
        counts_after=counts,
        balance_counts=counts,
        t=2.0,
        seed=0,
        count_mode="per_snapshot",
        funnel={"records_read": 10},
        bad_records=bad,
        other_skipped=other,
    )


def _table(md: str, heading: str) -> dict[str, str]:
    section = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| (\w+) \| (\d+) \|$", section, re.M))


def test_every_reason_is_in_the_tables_zero_counts_and_unknown_ones_too():
    md = datacard_markdown(_card({"bad_json": 2, "too_large": 1, "from_elsewhere": 4}, {"no_text": 5}))
    bad = _table(md, "Bad records (skipped, by reason)")
    assert list(bad) == [*SKIP_REASONS, "from_elsewhere"]  # the readers' order, then anything else counted
    assert bad["bad_json"] == "2" and bad["too_large"] == "1" and bad["from_elsewhere"] == "4"
    assert all(bad[r] == "0" for r in SKIP_REASONS if r not in ("bad_json", "too_large"))
    other = _table(md, "Skipped but not errors")
    assert list(other) == list(OTHER_SKIPS) and other["no_text"] == "5"
    empty = _table(datacard_markdown(_card({}, {})), "Bad records (skipped, by reason)")
    assert empty == dict.fromkeys(SKIP_REASONS, "0")


def test_the_readers_use_exactly_the_listed_reasons():
    """Every reason literal the readers pass on is in SKIP_REASONS / OTHER_SKIPS, and every listed one is used."""
    sources = "\n".join(p.read_text() for p in CRAWL.glob("*.py") if p.name != "pool.py")
    skipped = set(re.findall(r'\.skip\(\s*"(\w+)"', sources))
    skipped |= set(re.findall(r'failure = "(\w+)"', sources))  # framing's per-member outcomes
    skipped |= set(re.findall(r'return None, "(\w+)"', sources))  # wat._parse_json_slow
    skipped |= {"bad_url"}  # wat.add_counts passes the compiled path's count on
    counted = set(re.findall(r'\.count\(\s*"(\w+)"', sources))
    assert skipped == set(SKIP_REASONS), skipped ^ set(SKIP_REASONS)
    assert counted == set(OTHER_SKIPS), counted ^ set(OTHER_SKIPS)
