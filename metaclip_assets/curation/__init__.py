"""MetaCLIP curation logic as plain Python: no Dagster imports anywhere in this package.

Users coming from MetaCLIP's scripts get the same two functions by the same names::

    from metaclip_assets.curation import substr_matching, balance_sampling
"""

from metaclip_assets.curation.balancing import balance_pairs, balance_sampling, entry_counts, entry_probabilities
from metaclip_assets.curation.matching import Matcher, spacing, substr_matching, substr_matching_batch

__all__ = [
    "Matcher",
    "balance_pairs",
    "balance_sampling",
    "entry_counts",
    "entry_probabilities",
    "spacing",
    "substr_matching",
    "substr_matching_batch",
]
