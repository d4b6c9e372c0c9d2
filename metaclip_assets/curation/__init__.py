"""The MetaCLIP algorithm: substring matching, entry counts, balancing and the data card, as plain Python.

Must not import `defs` or Dagster, nor `acquisition`, `training`, `evaluation` or `sample`. Users coming from
MetaCLIP's scripts get the same functions by the same names (a facade; the pool readers live in `crawl/`)::

    from metaclip_assets.curation import substr_matching, balance_sampling, Matcher, read_source_file, build_pool
"""

from metaclip_assets.crawl.build import build_pool, read_source_file
from metaclip_assets.curation.balancing import balance_pairs, balance_sampling, entry_counts, entry_probabilities
from metaclip_assets.curation.matching import Matcher, spacing, substr_matching, substr_matching_batch

__all__ = [
    "Matcher",
    "balance_pairs",
    "balance_sampling",
    "build_pool",
    "entry_counts",
    "entry_probabilities",
    "read_source_file",
    "spacing",
    "substr_matching",
    "substr_matching_batch",
]
