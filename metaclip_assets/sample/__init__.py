"""The bundled sample snapshot: a small, deterministic CommonCrawl-like snapshot generated offline, so the whole
pipeline runs on a fresh machine; and `warc_writer`, the one WAT/WARC writer the sample, bench/ and tests share.

Must not import `defs` or Dagster; it writes crawl files in the real formats and knows nothing of how they are read.
"""

from metaclip_assets.sample.images import draw_image
from metaclip_assets.sample.manifest import SampleManifest, load_manifest
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.sample.texts import CLASSES

__all__ = ["CLASSES", "SampleManifest", "draw_image", "load_manifest", "make_sample_snapshot"]
