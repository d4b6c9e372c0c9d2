"""The bundled sample snapshot: a small, deterministic CommonCrawl-like snapshot generated offline, so the whole
pipeline runs on a fresh machine.

Must not import `defs` or Dagster; it writes crawl files in the real formats and knows nothing of how they are read.
"""

from metaclip_assets.sample.snapshot import SampleManifest, load_manifest, make_sample_snapshot

__all__ = ["SampleManifest", "load_manifest", "make_sample_snapshot"]
