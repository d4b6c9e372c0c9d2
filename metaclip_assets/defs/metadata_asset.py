"""The metadata asset: MetaCLIP's list of visual concepts, frozen and versioned by content hash."""

import dagster as dg
import polars as pl
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.metadata.entries import MetadataConfig, build_metadata


class MetadataAssetConfig(dg.Config):
    """Sources of the entries. Globs are relative to the data root; thresholds default to MetaCLIP v1's."""

    use_wordnet: bool = True
    wiki_dump_globs: list[str] = Field(default=["wikipedia/*.xml", "wikipedia/*.xml.bz2", "wikipedia/*.xml.gz"])
    unigram_table_globs: list[str] = Field(default=[], description="ready `word count` tables, if you have them")
    bigram_table_globs: list[str] = Field(default=[], description="ready `w1 w2 count` tables")
    ngram_table_layout: str = Field(default="word_count", description="'word_count' or 'count_word' (tab-separated)")
    pageview_globs: list[str] = Field(default=["wikipedia/pageviews/pageviews-*"])
    min_unigram_count: int = 100
    min_bigram_pmi: float = 30.0
    min_title_hourly_views: int = 50
    min_title_views: int = 70
    metadata_json: str | None = Field(
        default=None, description="A ready MetaCLIP metadata.json (JSON list of strings) used instead of building."
    )


def _glob(storage, patterns: list[str]) -> list[str]:
    found: set[str] = set()
    for pattern in patterns:
        found.update(storage.fs.glob(storage.path(pattern)))
    return sorted(found)


@dg.asset(
    group_name="curation",
    kinds={"python", "json"},
    description="MetaCLIP metadata entries (WordNet + Wikipedia unigrams, bigrams, titles); entry id = position.",
)
def metadata_entries(
    context: dg.AssetExecutionContext, config: MetadataAssetConfig, curation_storage: CurationStorage
) -> dg.MaterializeResult:
    storage = curation_storage.storage()
    build = build_metadata(
        MetadataConfig(
            wordnet=config.use_wordnet,
            wiki_dump_paths=_glob(storage, config.wiki_dump_globs),
            unigram_table_paths=_glob(storage, config.unigram_table_globs),
            bigram_table_paths=_glob(storage, config.bigram_table_globs),
            pageview_paths=_glob(storage, config.pageview_globs),
            min_unigram_count=config.min_unigram_count,
            min_bigram_pmi=config.min_bigram_pmi,
            min_title_hourly_views=config.min_title_hourly_views,
            min_title_views=config.min_title_views,
            ngram_table_layout=config.ngram_table_layout,
            metadata_json=config.metadata_json,
        )
    )
    folder = layout.metadata_dir(build.sha256)
    # The canonical bytes, so the file's sha256 is the version recorded everywhere downstream.
    json_uri = storage.write_text(f"{folder}/metadata.json", build.to_json())
    storage.write_parquet(
        f"{folder}/entries.parquet",
        pl.DataFrame(
            {"entry_id": range(len(build.entries)), "entry": build.entries, "source": build.sources},
            schema={"entry_id": pl.UInt32, "entry": pl.Utf8, "source": pl.Utf8},
        ),
    )
    pointer = {
        "sha256": build.sha256,
        "metadata_json": f"{folder}/metadata.json",
        "entries": len(build.entries),
        "per_source_counts": build.per_source_counts,
    }
    storage.write_json(layout.METADATA_CURRENT, pointer, indent=2)
    context.log.info(f"metadata: {len(build.entries):,} entries, sha256 {build.sha256[:12]}, {build.per_source_counts}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(build.entries),
            "sha256": build.sha256,
            "path": dg.MetadataValue.path(json_uri),
            "per_source_counts": dg.MetadataValue.json(build.per_source_counts),
            "stats": dg.MetadataValue.json(build.stats),
            "first_entries": dg.MetadataValue.json(build.entries[:20]),
        },
        data_version=dg.DataVersion(build.sha256[:16]),
    )


def load_current_metadata(storage) -> tuple[list[str], str]:
    """(entries, sha256) of the last materialized metadata; a clear error if there is none yet."""
    if not storage.exists(layout.METADATA_CURRENT):
        raise FileNotFoundError(
            f"no metadata at {storage.uri(layout.METADATA_CURRENT)}: materialize the `metadata_entries` asset first"
        )
    pointer = storage.read_json(layout.METADATA_CURRENT)
    return storage.read_json(pointer["metadata_json"]), pointer["sha256"]
