"""The current metadata on storage: its versioned folder and the `metadata/current.json` pointer.

`store_metadata` writes a build under `metadata/<sha256[:16]>/` and points `current.json` at it;
`load_current_metadata` is what every downstream stage reads. Knows storage and layout, never Dagster.
"""

from __future__ import annotations

import polars as pl

from metaclip_assets import layout
from metaclip_assets.metadata.entries import MetadataBuild, MetadataConfig, build_metadata
from metaclip_assets.storage import Storage


def store_metadata(storage: Storage, build: MetadataBuild) -> str:
    """Write metadata.json, entries.parquet and the pointer; returns the URI of metadata.json."""
    # The canonical bytes, so the file's sha256 is the version recorded everywhere downstream.
    json_uri = storage.write_text(layout.metadata_json_key(build.sha256), build.to_json())
    storage.write_parquet(
        layout.metadata_entries_key(build.sha256),
        pl.DataFrame(
            {"entry_id": range(len(build.entries)), "entry": build.entries, "source": build.sources},
            schema={"entry_id": pl.UInt32, "entry": pl.Utf8, "source": pl.Utf8},
        ),
    )
    pointer = {
        "sha256": build.sha256,
        "metadata_json": layout.metadata_json_key(build.sha256),
        "entries": len(build.entries),
        "per_source_counts": build.per_source_counts,
    }
    storage.write_json(layout.METADATA_CURRENT, pointer, indent=2)
    return json_uri


def load_current_metadata(storage: Storage) -> tuple[list[str], str]:
    """(entries, sha256) of the last materialized metadata; a clear error if there is none yet."""
    if not storage.exists(layout.METADATA_CURRENT):
        raise FileNotFoundError(
            f"no metadata at {storage.uri(layout.METADATA_CURRENT)}: materialize the `metadata_entries` asset first"
        )
    pointer = storage.read_json(layout.METADATA_CURRENT)
    return storage.read_json(pointer["metadata_json"]), pointer["sha256"]


def build_and_store(storage: Storage, config: MetadataConfig) -> tuple[MetadataBuild, str]:
    """Build the entries from `config` (paths already resolved) and make them the current metadata."""
    build = build_metadata(config)
    return build, store_metadata(storage, build)
