"""MetaCLIP's metadata: the entry list built from WordNet synsets and Wikipedia (unigrams, bigrams, titles), frozen and
versioned by content hash.

Must not import `crawl`, `curation`, `acquisition`, `training`, `evaluation`, `defs` or Dagster.
"""

from metaclip_assets.metadata.entries import MetadataBuild, MetadataConfig, build_metadata

__all__ = ["MetadataBuild", "MetadataConfig", "build_metadata"]
