"""Reading CommonCrawl: gzip/WARC framing, WAT JSON and WARC HTML readers, image URL resolution, the pool build, and
the crawl index (which snapshots and WAT files exist).

Owns the pool's schema and skip reasons. Must not import `curation`, `metadata`, `acquisition`, `training`,
`evaluation`, `sample`, `defs` or Dagster: it only turns crawl files into rows.
"""

from metaclip_assets.crawl.build import build_pool, read_source_file
from metaclip_assets.crawl.pool import OTHER_SKIPS, POOL_SCHEMA, SKIP_REASONS, ReadStats

__all__ = ["OTHER_SKIPS", "POOL_SCHEMA", "SKIP_REASONS", "ReadStats", "build_pool", "read_source_file"]
