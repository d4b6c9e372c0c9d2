"""The sample manifest: what the generator wrote and the exact numbers a correct reader must reproduce."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from metaclip_assets import layout

GENERATOR_VERSION = 1


@dataclass
class SampleManifest:
    """What was written and what a correct reader must find. Written to root/manifests/<snapshot>.json."""

    snapshot: str
    seed: int
    generator_version: int
    crawl_dir: str  # relative to root
    wat_files: list[str]  # names relative to crawl_dir
    warc_files: list[str]
    files: list[dict]  # {path (relative to root), bytes, sha256}
    pages: dict  # generated / readable pages per format
    records: dict  # per crawl file: records written, records a reader can parse
    planted: list[dict]  # each deliberately bad record / link: reason, file, offset, page_url
    expected_skips: dict  # reason code -> count (pool skip codes)
    image_links: dict  # IMG links in readable records (wat / warc / bad_url / no_text)
    pairs_written: dict  # non-empty cleaned (url, text) occurrences, per format and total
    pairs_distinct: int  # distinct (url, text) over the whole snapshot (global dedup)
    pairs_distinct_per_file: dict  # file -> distinct pairs inside that file (upstream per-file dedup)
    pairs_by_kind: dict  # distinct pairs by generator text kind
    texts_matching_vocabulary: int  # distinct pairs whose text matches >= 1 built-in vocabulary word
    vocabulary_counts: dict  # word -> distinct pairs whose text matches it (exact for those entries)
    planted_duplicates: list[dict]
    classes: list[str]
    image_classes: dict  # resolved image URL -> class (None: decorative logo)
    images: dict  # images WARC path, counts, missing / corrupt / http_error URL lists
    eval: dict
    wikipedia: dict
    pairs_file: str  # gzipped JSONL of every distinct pair: url, text, kind, n


def manifest_path(root: Path, snapshot: str) -> Path:
    return Path(root) / layout.sample_manifest_key(snapshot)


def write_manifest(root: Path, manifest: SampleManifest) -> Path:
    path = manifest_path(root, manifest.snapshot)
    path.write_text(json.dumps(asdict(manifest), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def load_manifest(root: Path, snapshot: str) -> SampleManifest:
    data = json.loads(manifest_path(root, snapshot).read_text(encoding="utf-8"))
    return SampleManifest(**data)
