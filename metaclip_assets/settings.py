"""Every `METACLIP_*` environment variable: its name, default and meaning, read in this module and nowhere else.

Values are read when asked for (a function call), not at import, except where a caller deliberately freezes one
when the code location loads (the shard count and backfill mode are part of the partition definitions).
`python -m metaclip_assets.settings` prints the table with the values in effect. Imports nothing of the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# CommonCrawl's public endpoints: the defaults of METACLIP_CRAWL_INDEX and METACLIP_CRAWL_BASE_URL.
DEFAULT_INDEX_URL = "https://index.commoncrawl.org/collinfo.json"
DEFAULT_BASE_URL = "https://data.commoncrawl.org/"

_ON = ("on", "1", "true", "running")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str

    def raw(self) -> str | None:
        """The variable's value; unset and blank both mean the default."""
        value = os.environ.get(self.name, "").strip()
        return value or self.default

    def int(self) -> int | None:
        value = self.raw()
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{self.name}={value!r} is not an integer ({self.help})") from None

    def on(self) -> bool:
        return (self.raw() or "off").lower() in _ON


DATA_ROOT = Setting("METACLIP_DATA_ROOT", "data", "local directory or fsspec URL holding every artifact")
NUM_SHARDS = Setting("METACLIP_NUM_SHARDS", "4", "shards per snapshot; fixed when the code location loads")
NUM_BUCKETS = Setting(
    "METACLIP_NUM_BUCKETS",
    None,
    "buckets (pair_id ranges) the snapshot steps reduce one at a time: memory per step ~ matched pairs / buckets; "
    "default: the shard count (a bucket ~ a shard's matched pairs)",
)
BACKFILL = Setting(
    "METACLIP_BACKFILL",
    "range",
    "'range' (one run per partition range, needed by --partition-range) "
    "or 'per_key' (one run per key, so backfills and automation scale out shard by shard)",
)
TRAINING_MODE = Setting("METACLIP_TRAINING_MODE", "local", "'local' (subprocess) or 'k8s' (PipesK8sClient pods)")
CODE_VERSION = Setting(
    "METACLIP_CODE_VERSION",
    None,
    "code version recorded with a model (set in the training "
    "image); default: `git describe` of the checkout, else the package version",
)
CRAWL_INDEX = Setting("METACLIP_CRAWL_INDEX", DEFAULT_INDEX_URL, "collinfo.json URL or path")
CRAWL_BASE_URL = Setting(
    "METACLIP_CRAWL_BASE_URL",
    DEFAULT_BASE_URL,
    "base of crawl-data/<id>/wat.paths.gz and of the WAT files it lists: URL or local mirror dir",
)
MIN_SNAPSHOT = Setting("METACLIP_MIN_SNAPSHOT", None, "crawls older than this id are never registered")
MAX_NEW_SNAPSHOTS = Setting("METACLIP_MAX_NEW_SNAPSHOTS", "1", "new snapshots registered per sensor tick")
MAX_WAT_FILES_PER_SHARD = Setting(
    "METACLIP_MAX_WAT_FILES_PER_SHARD", None, "download at most this many WAT files per shard (default: all)"
)
CC_SENSOR = Setting("METACLIP_CC_SENSOR", "off", "'on': the discovery sensor starts RUNNING")
CC_SENSOR_INTERVAL_S = Setting("METACLIP_CC_SENSOR_INTERVAL_S", "3600", "seconds between crawl index reads")
RECURATE_SCHEDULE = Setting("METACLIP_RECURATE_SCHEDULE", "off", "'on': the re-curation schedule starts RUNNING")
RECURATE_CRON = Setting("METACLIP_RECURATE_CRON", "0 3 * * 1", "cron of the re-curation schedule")
AUTOMATION_INTERVAL_S = Setting("METACLIP_AUTOMATION_INTERVAL_S", "30", "seconds between automation evaluations")
BENCH_DIR = Setting("METACLIP_BENCH_DIR", None, "benchmarks' cache of generated inputs (default: <tmp>/metaclip-bench)")
SHARED = Setting(
    "METACLIP_SHARED",
    None,
    "the team's shared data folder for real-data tests (default: ../shared beside the checkout)",
)
DECODE_MEMORY_FRACTION = Setting(
    "METACLIP_DECODE_MEMORY_FRACTION",
    "0.5",
    "share of the process's memory (cgroup limit, else physical) that image acquisition's fetched bodies and "
    "decodes may hold; decode workers = what fits after the bodies / the worst-case decode",
)
BLUR_FACES = Setting(
    "METACLIP_BLUR_FACES",
    "off",
    "'on': image acquisition pixelates the faces it detects before writing (default of the blur_faces config)",
)

ALL = [
    DATA_ROOT,
    NUM_SHARDS,
    NUM_BUCKETS,
    BACKFILL,
    TRAINING_MODE,
    CODE_VERSION,
    CRAWL_INDEX,
    CRAWL_BASE_URL,
    MIN_SNAPSHOT,
    MAX_NEW_SNAPSHOTS,
    MAX_WAT_FILES_PER_SHARD,
    CC_SENSOR,
    CC_SENSOR_INTERVAL_S,
    RECURATE_SCHEDULE,
    RECURATE_CRON,
    AUTOMATION_INTERVAL_S,
    BENCH_DIR,
    SHARED,
    DECODE_MEMORY_FRACTION,
    BLUR_FACES,
]


def data_root() -> str:
    return DATA_ROOT.raw()  # type: ignore[return-value]


def num_shards() -> int:
    n = NUM_SHARDS.int()
    if n is None or n < 1:
        raise ValueError(f"{NUM_SHARDS.name} must be an integer >= 1, got {NUM_SHARDS.raw()!r}")
    return n


def num_buckets() -> int:
    if NUM_BUCKETS.raw() in (None, ""):
        return num_shards()
    n = NUM_BUCKETS.int()
    if n is None or not 1 <= n <= 65536:
        raise ValueError(f"{NUM_BUCKETS.name} must be an integer in [1, 65536], got {NUM_BUCKETS.raw()!r}")
    return n


def backfill_mode() -> str:
    return BACKFILL.raw()  # type: ignore[return-value]


def training_mode() -> str:
    return TRAINING_MODE.raw()  # type: ignore[return-value]


def code_version() -> str | None:
    value = CODE_VERSION.raw()
    return None if value in (None, "unknown") else value


def bench_dir() -> Path:
    import tempfile

    return Path(BENCH_DIR.raw() or Path(tempfile.gettempdir()) / "metaclip-bench")


def decode_memory_fraction() -> float:
    value = DECODE_MEMORY_FRACTION.raw()
    try:
        fraction = float(value)  # type: ignore[arg-type]
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise ValueError(f"{DECODE_MEMORY_FRACTION.name} must be a number in (0, 1], got {value!r}")
    return fraction


def blur_faces() -> bool:
    return BLUR_FACES.on()


def shared_dir(repo_root: Path) -> Path:
    return Path(SHARED.raw() or repo_root.parent / "shared")


def main() -> None:
    width = max(len(s.name) for s in ALL)
    for s in ALL:
        print(f"{s.name:<{width}}  {s.raw()!s:<28}  {s.help}")


if __name__ == "__main__":
    main()
