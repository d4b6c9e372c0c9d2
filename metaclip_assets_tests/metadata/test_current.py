"""The current-metadata pointer: written with its versioned folder, read back by every downstream stage."""

from __future__ import annotations

import polars as pl
import pytest

from metaclip_assets import layout
from metaclip_assets.metadata.current import build_and_store, load_current_metadata
from metaclip_assets.metadata.entries import MetadataConfig
from metaclip_assets.storage import Storage


def test_store_then_load(tmp_path):
    (tmp_path / "m.json").write_text('["dog", "hot dog", "cat"]')
    storage = Storage(tmp_path / "root")
    build, uri = build_and_store(storage, MetadataConfig(wordnet=False, metadata_json=str(tmp_path / "m.json")))
    assert load_current_metadata(storage) == (["dog", "hot dog", "cat"], build.sha256)
    assert uri == storage.uri(layout.metadata_json_key(build.sha256))
    pointer = storage.read_json(layout.METADATA_CURRENT)
    assert pointer["metadata_json"] == f"metadata/{build.sha256[:16]}/metadata.json" and pointer["entries"] == 3
    table = storage.read_parquet(layout.metadata_entries_key(build.sha256))
    assert table["entry"].to_list() == build.entries and table.schema["entry_id"] == pl.UInt32


def test_missing_pointer_names_the_asset(tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the `metadata_entries` asset first"):
        load_current_metadata(Storage(tmp_path))
