"""The metadata asset: MetaCLIP's list of visual concepts, frozen and versioned by content hash."""

import dagster as dg
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.results import materialize_result
from metaclip_assets.metadata.current import build_and_store
from metaclip_assets.metadata.entries import MetadataConfig
from metaclip_assets.storage import glob


class MetadataAssetConfig(dg.Config):
    """Sources of the entries. Globs are relative to the data root; thresholds default to MetaCLIP v1's."""

    use_wordnet: bool = MetadataConfig.wordnet
    wiki_dump_globs: list[str] = Field(default=list(layout.WIKI_DUMP_GLOBS))
    unigram_table_globs: list[str] = Field(default=[], description="ready `word count` tables, if you have them")
    bigram_table_globs: list[str] = Field(default=[], description="ready `w1 w2 count` tables")
    ngram_table_layout: str = Field(
        default=MetadataConfig.ngram_table_layout, description="'word_count' or 'count_word' (tab-separated)"
    )
    pageview_globs: list[str] = Field(default=list(layout.PAGEVIEW_GLOBS))
    min_unigram_count: int = MetadataConfig.min_unigram_count
    min_bigram_pmi: float = MetadataConfig.min_bigram_pmi
    min_title_hourly_views: int = MetadataConfig.min_title_hourly_views
    min_title_views: int = MetadataConfig.min_title_views
    metadata_json: str | None = Field(
        default=MetadataConfig.metadata_json,
        description="A ready MetaCLIP metadata.json (JSON list of strings) used instead of building.",
    )


@dg.asset(
    group_name="curation",
    kinds={"python", "json"},
    description="MetaCLIP metadata entries (WordNet + Wikipedia unigrams, bigrams, titles); entry id = position.",
)
def metadata_entries(
    context: dg.AssetExecutionContext, config: MetadataAssetConfig, curation_storage: CurationStorage
) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    build, json_uri = build_and_store(
        storage,
        MetadataConfig(
            wordnet=config.use_wordnet,
            wiki_dump_paths=glob(storage, config.wiki_dump_globs),
            unigram_table_paths=glob(storage, config.unigram_table_globs),
            bigram_table_paths=glob(storage, config.bigram_table_globs),
            pageview_paths=glob(storage, config.pageview_globs),
            min_unigram_count=config.min_unigram_count,
            min_bigram_pmi=config.min_bigram_pmi,
            min_title_hourly_views=config.min_title_hourly_views,
            min_title_views=config.min_title_views,
            ngram_table_layout=config.ngram_table_layout,
            metadata_json=config.metadata_json,
        ),
    )
    context.log.info(f"metadata: {len(build.entries):,} entries, sha256 {build.sha256[:12]}, {build.per_source_counts}")
    return materialize_result(
        {
            "dagster/row_count": len(build.entries),
            "sha256": build.sha256,
            "path": dg.MetadataValue.path(json_uri),
            "per_source_counts": dg.MetadataValue.json(build.per_source_counts),
            "stats": dg.MetadataValue.json(build.stats),
            "first_entries": dg.MetadataValue.json(build.entries[:20]),
        },
        data_version=build.sha256[:16],
    )
