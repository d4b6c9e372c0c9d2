"""The metadata_language asset: one partition per language, English pointing at metadata_entries unchanged."""

from __future__ import annotations

import dagster as dg

from metaclip_assets.defs.metadata_asset import metadata_entries
from metaclip_assets.defs.metadata_worldwide_asset import language_partitions, metadata_language
from metaclip_assets.metadata import worldwide
from metaclip_assets.metadata.current import load_current_metadata
from metaclip_assets.storage import Storage
from metaclip_assets_tests.conftest import asset_metadata, materialize, storage_resources


def test_partitions_are_the_languages_with_an_offline_source():
    assert language_partitions.get_partition_keys() == list(worldwide.LANGUAGES)


def test_language_partition_from_data_root_inputs_and_english_from_v1(tmp_path):
    root = tmp_path / "root"
    (root / "omw" / "ita").mkdir(parents=True)
    (root / "omw" / "ita" / "wn-data-ita.tab").write_text(
        "02084071-n\tita:lemma\tcane\n02084071-n\tita:lemma\tcane_da_caccia\n"
    )
    (root / "wikipedia" / "pageviews").mkdir(parents=True)
    (root / "wikipedia" / "pageviews" / "pageviews-20240101-000000").write_text(
        "it Colosseo 120 0\nit.m Colosseo 80 0\nit Roma 100 0\nen London 500 0\n"
    )
    (root / "v1.json").write_text('["dog", "cat"]')
    kwargs = {"instance": dg.DagsterInstance.ephemeral(), "resources": storage_resources(root)}
    assets = [metadata_entries, metadata_language]
    # unigrams from wordfreq (the offline stand-in), capped small so the test stays fast
    config = {"ops": {"metadata_language": {"config": {"unigram_cap": 50}}}}
    result = materialize(assets, ["metadata_language"], "it", config, **kwargs)
    md = asset_metadata(result, "metadata_language")
    counts = md["per_source_counts"]
    assert counts["wordnet"]["kept"] == 2 and counts["wiki_title"]["kept"] == 1  # int(2 titles * 0.76) = 1
    assert counts["wiki_unigram"]["kept"] == 50 and counts["number"]["kept"] == 100
    assert set(md["stand_ins"]) == {"wiki_unigram"}  # OMW given: no MultiWordNet stand-in
    assert "wordfreq" in md["stand_ins"]["wiki_unigram"] and "(stand-in)" in md["card"]
    assert md["dagster/row_count"] == 100 + 2 + 50 + 1 and len(md["sample_entries"]) == 20

    v1 = {"ops": {"metadata_entries": {"config": {"use_wordnet": False, "metadata_json": str(root / "v1.json")}}}}
    materialize(assets, ["metadata_entries"], run_config=v1, **kwargs)
    english = asset_metadata(materialize(assets, ["metadata_language"], "en", **kwargs), "metadata_language")
    storage = Storage(root)
    assert english["sha256"] == load_current_metadata(storage)[1] and english["stand_ins"] == {}
    loaded = worldwide.load_worldwide_metadata(storage)
    assert sorted(loaded) == ["en", "it"] and loaded["en"] == (["dog", "cat"], english["sha256"])
    assert "cane da caccia" in loaded["it"][0] and "Colosseo" in loaded["it"][0] and md["sha256"] == loaded["it"][1]
