"""Metadata sources (WordNet, Wikipedia dumps/tables/pageviews) and the metadata build."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import math
from collections import Counter

import pytest

from metaclip_assets.metadata import wikipedia as wiki
from metaclip_assets.metadata.entries import (
    MetadataConfig,
    build_metadata,
    entries_sha256,
    load_metadata_json,
    write_metadata_json,
)
from metaclip_assets.metadata.wordnet import NUMBER_ENTRIES, wordnet_entries, wordnet_names, wordnet_synset_names


@pytest.fixture(scope="module")
def wn_entries() -> list[str]:
    return wordnet_entries()


# ----------------------------------------------------------------------------------------------- WordNet


@pytest.mark.realdata
def test_wordnet_entries_equal_reference_slice(wn_entries, shared_metaclip):
    reference = json.loads((shared_metaclip / "wordnet_part_86654.json").read_text(encoding="utf-8"))
    assert len(reference) == 86_654
    assert len(wn_entries) == 86_654 == len(set(wn_entries))
    assert set(wn_entries) == set(reference)


def test_wordnet_entries_numbers_first_and_cut_rule(wn_entries):
    assert wn_entries[:100] == NUMBER_ENTRIES == [str(i) for i in range(100)]
    names = set(wn_entries)
    assert {"dog", "hot spring", "jack-o'-lantern", "a"} <= names  # "a.d." is cut to "a"
    assert "" not in names and not any("_" in n for n in names)
    assert len(wordnet_names()) == 86_554


def test_wordnet_synset_names_follow_nltk():
    names = wordnet_synset_names()
    assert len(names) == len(set(names)) == 117_659
    assert {"dog.n.01", "hot_spring.n.01", "able.a.01", "able.s.02", ".22_caliber.a.01", "run.v.01"} <= set(names)
    # The sense number never reaches the metadata: cutting full names gives exactly the fast path's names.
    cut = {n.split(".", 1)[0].replace("_", " ") for n in names} - {""}
    assert cut == set(wordnet_names())


# ------------------------------------------------------------------------------------- XML dumps, text

TINY_DUMP = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">
  <siteinfo><sitename>Wikipedia</sitename></siteinfo>
  <page><title>Alpha Beta</title><ns>0</ns><id>1</id>
    <revision><id>11</id><text xml:space="preserve">'''Alpha''' is a [[letter|Greek letter]].{{cite|x={{inner}}}}
&lt;ref&gt;ignored words&lt;/ref&gt;
== Usage ==
Alpha beta alpha.</text></revision></page>
  <page><title>Alpha</title><ns>0</ns><id>2</id><redirect title="Alpha Beta" />
    <revision><id>12</id><text>#REDIRECT [[Alpha Beta]]</text></revision></page>
  <page><title>Wikipedia:About</title><ns>4</ns><id>3</id>
    <revision><id>13</id><text>project page words</text></revision></page>
  <page><title>Two Revs</title><ns>0</ns><id>4</id>
    <revision><id>14</id><text>Old text</text></revision>
    <revision><id>15</id><text>New text</text></revision></page>
  <page><title>Old Redirect</title><ns>0</ns><id>5</id>
    <revision><id>16</id><text>  #redirect [[Two Revs]]</text></revision></page>
</mediawiki>
"""


@pytest.mark.parametrize("suffix", [".xml", ".xml.bz2", ".xml.gz"])
def test_tiny_dump_articles_and_counts(tmp_path, suffix):
    path = tmp_path / f"dump{suffix}"
    data = TINY_DUMP.encode()
    path.write_bytes(
        bz2.compress(data) if suffix.endswith("bz2") else gzip.compress(data) if suffix.endswith("gz") else data
    )
    articles = list(wiki.iter_dump_articles(path))
    assert [t for t, _ in articles] == ["Alpha Beta", "Two Revs"]
    assert articles[1][1] == "New text"
    assert wiki.wikitext_to_plain(articles[0][1]) == "Alpha is a Greek letter.\n\nUsage\nAlpha beta alpha."

    counts = wiki.count_dump_ngrams([path])
    assert counts.documents == 2
    assert counts.total_tokens == 11
    assert counts.unigrams == Counter(
        {"Alpha": 2, "is": 1, "a": 1, "Greek": 1, "letter": 1, "Usage": 1, "beta": 1, "alpha": 1, "New": 1, "text": 1}
    )
    # No bigram across "." or a line break; case is kept ("Alpha" vs "alpha").
    assert counts.bigrams == Counter(
        {
            ("Alpha", "is"): 1,
            ("is", "a"): 1,
            ("a", "Greek"): 1,
            ("Greek", "letter"): 1,
            ("Alpha", "beta"): 1,
            ("beta", "alpha"): 1,
            ("New", "text"): 1,
        }
    )


def test_wikitext_to_plain_constructs():
    text = (
        "<!-- hidden -->{{Infobox|a={{nested|b}}|c=[[d]]}}Intro ''it'' '''bold''' [[Paris]]ian"
        " [[Lyon|the city]] [http://example.org Example site] [http://bare.example]&nbsp;x<br/>y\n"
        "[[File:Cat.jpg|thumb|A [[cat]] caption]]\n"
        '{| class="wikitable"\n|-\n| cell {{tpl}}\n|}\n'
        "=== Heading ===\n* item one\n# item two\n"
        '<ref name="a" />Text<ref>cite</ref> <math>x^2</math><small>small</small>\n'
        "[[Category:Things]] [[de:Ding]] [[wikt:word|word]] __NOTOC__"
    )
    assert wiki.wikitext_to_plain(text) == (
        "Intro it bold Parisian the city Example site \xa0x\ny\n\nHeading\nitem one\nitem two\nText small\nword"
    )


def test_tokenize_rule():
    assert wiki.tokenize("Rock'n'roll, Jean-Paul's 1990s -- e-mail_x café 3.5 'quoted'") == [
        "Rock'n'roll",
        "Jean-Paul's",
        "1990s",
        "e-mail",
        "x",
        "café",
        "3",
        "5",
        "quoted",
    ]


@pytest.mark.realdata
def test_real_enwiki_dump_sample(realdata):
    (path,) = sorted((realdata / "enwiki-dump-sample").glob("*.bz2"))
    articles = list(wiki.iter_dump_articles(path))
    titles = [t for t, _ in articles]
    # 206 pages: 205 in namespace 0, of which 99 are redirects.
    assert len(articles) == 106
    assert titles[:3] == ["Anarchism", "Autism", "Albedo"]
    assert "AccessibleComputing" not in titles  # a redirect
    counts = wiki.count_ngrams(wiki.wikitext_to_plain(text) for _, text in articles)
    assert counts.documents == 106
    assert 400_000 < counts.total_tokens < 600_000
    assert counts.total_tokens == sum(counts.unigrams.values())
    unigrams = wiki.unigram_entries(counts.unigrams, min_count=100)
    assert unigrams[:3] == ["the", "of", "and"]
    assert {"The", "autism", "Alabama"} <= set(unigrams)
    assert all(counts.unigrams[w] >= 100 for w in unigrams)
    # At this toy scale no pair reaches PMI 30: the best possible PMI (two hapaxes always together) is log2(N).
    best = max(score for _, score in wiki.bigram_scores(counts))
    assert best == pytest.approx(math.log2(counts.total_tokens))
    assert best < 30 and wiki.bigram_entries(counts) == []
    assert len(wiki.bigram_entries(counts, min_pmi=18.0)) > 1000


# ----------------------------------------------------------------------------------------------- PMI


def test_pmi_matches_hand_computation():
    counts = wiki.count_ngrams(["x y", "x y", "x z", "w w w w"])
    assert counts.total_tokens == 10
    scores = dict(wiki.bigram_scores(counts))
    # n_xx = 10; x:3 y:2 z:1 w:4; pmi = log2(n_ii * n_xx) - log2(n_ix * n_xi)
    assert scores[("x", "y")] == pytest.approx(math.log2(2 * 10) - math.log2(3 * 2))  # 1.7370
    assert scores[("x", "z")] == pytest.approx(math.log2(1 * 10) - math.log2(3 * 1))  # 1.7370
    assert scores[("w", "w")] == pytest.approx(math.log2(3 * 10) - math.log2(4 * 4))  # 0.9069
    assert wiki.bigram_entries(counts, min_pmi=1.0) == ["x y", "x z"]


def test_pmi_threshold_and_missing_words():
    n = 2**30  # pmi of two hapaxes seen together is exactly log2(n) = 30.0
    ngrams = wiki.NgramCounts(
        unigrams=Counter({"the": n - 3, "Foo": 1, "Bar": 1, "Baz": 1}),
        bigrams=Counter({("Foo", "Bar"): 1, ("the", "Foo"): 1, ("Foo", "Qux"): 5, ("Baz", "Baz"): 1}),
        total_tokens=n,
    )
    scores = dict(wiki.bigram_scores(ngrams))
    assert ("Foo", "Qux") not in scores  # word missing from the unigram table
    assert scores[("Foo", "Bar")] == 30.0
    assert scores[("Baz", "Baz")] == 30.0
    assert scores[("the", "Foo")] < 1
    assert wiki.bigram_entries(ngrams) == ["Baz Baz", "Foo Bar"]  # >= 30 kept; ties ordered by string


def test_frequency_tables(tmp_path):
    uni = tmp_path / "uni.txt.gz"
    uni.write_bytes(
        gzip.compress("the 500\nDog 120\ndog 99\nbad\nx y 3\nzero 0\nneg -1\n\xe9\n".encode() + b"\xff\xfe 3\n")
    )
    table = wiki.read_unigram_table(uni)
    assert table.counts == Counter({"the": 500, "Dog": 120, "dog": 99})  # the zero row carries nothing
    assert table.skipped_lines == 5  # "bad", "x y 3", "neg -1", "é" (no count), invalid UTF-8
    assert wiki.unigram_entries(table.counts, min_count=100) == ["the", "Dog"]

    bi = tmp_path / "bi.txt"
    bi.write_text("3\thot\tdog\n2\tNew\tYork\nbroken\n1\tonly\n", encoding="utf-8")
    table = wiki.read_bigram_table(bi, layout="count_word")
    assert table.counts == Counter({("hot", "dog"): 3, ("New", "York"): 2})
    assert table.skipped_lines == 2


# ------------------------------------------------------------------------------------------ pageviews


def test_pageview_titles(tmp_path):
    hour1 = (
        b"en Main_Page 242332 0\n"
        b"en Main_Page 10 0\n"  # below 50 in this hour: ignored
        b"en.m Main_Page 1000 0\n"  # mobile
        b"de Berlin 500 0\n"  # other project
        b"en Special:Search 900 0\n"  # namespace title
        b"en New_York_City 60 0\n"
        b"en Rare 69 0\n"  # 69 < 70 in total
        b"en Split_Hours 40 0\n"
        b"en Sum_Title 50 0\n"
        b"en Broken 12x 0\n"  # malformed: count
        b"en onlythree 5\n"  # malformed: 3 fields
        b"garbage\n"
    ) + b"en Caf\xe9 100 0\n"  # malformed: not UTF-8
    hour2 = "en Split_Hours 40 0\nen Sum_Title 50 0\nen New_York_City 20 0\nen.m Rare 500 0\n"
    (tmp_path / "pageviews-1.gz").write_bytes(gzip.compress(hour1))
    (tmp_path / "pageviews-2.bz2").write_bytes(bz2.compress(hour2.encode()))
    result = wiki.title_entries([tmp_path / "pageviews-1.gz", tmp_path / "pageviews-2.bz2"])
    assert result.entries == ["Main Page", "Sum Title"]  # New York City: 60 (+20 ignored) < 70
    assert result.views == {"Main Page": 242332, "Sum Title": 100}
    assert result.skipped_lines == 4
    assert (result.files, result.lines, result.project_lines) == (2, 17, 10)

    lower = wiki.title_entries([tmp_path / "pageviews-1.gz"], min_hourly=1, min_total=60)
    assert lower.entries == ["Main Page", "Rare", "New York City"]
    assert lower.views["Main Page"] == 242342
    mobile = wiki.title_entries([tmp_path / "pageviews-2.bz2"], project="en.m")
    assert mobile.entries == ["Rare"]


# ------------------------------------------------------------------------------------ metadata build


def _small_config(tmp_path) -> MetadataConfig:
    big = 2**30  # makes the two hapaxes "hot"/"dog2" reach PMI >= 30
    (tmp_path / "uni.txt").write_text(
        f"the {big}\nDog 300\ndog 200\n7 500\n- 400\nab 150\nrare 5\nhot 1\ndog2 1\n", encoding="utf-8"
    )
    (tmp_path / "bi.txt").write_text("hot dog2 1\nthe the 7\nhot missing 9\n", encoding="utf-8")
    (tmp_path / "pv").write_text(
        "en Dog 900 0\nen Hot_dog 900 0\nen hot_dog2 900 0\nen _Padded_ 900 0\nen ! 900 0\nen 42 900 0\n",
        encoding="utf-8",
    )
    return MetadataConfig(
        wordnet=False,
        unigram_table_paths=[str(tmp_path / "uni.txt")],
        bigram_table_paths=[str(tmp_path / "bi.txt")],
        pageview_paths=[str(tmp_path / "pv")],
    )


def test_build_metadata_order_dedup_and_cleanup(tmp_path):
    build = build_metadata(_small_config(tmp_path))
    assert build.entries[:100] == NUMBER_ENTRIES
    assert build.entries[100:] == ["the", "Dog", "dog", "ab", "hot dog2", "Padded", "Hot dog"]
    assert build.sources == ["number"] * 100 + ["wiki_unigram"] * 4 + ["wiki_bigram", "wiki_title", "wiki_title"]
    counts = build.per_source_counts
    assert counts["wiki_unigram"] == {"candidates": 6, "kept": 4, "dropped": 1, "duplicates": 1}  # "-", "7"
    assert counts["wiki_bigram"] == {"candidates": 1, "kept": 1, "dropped": 0, "duplicates": 0}
    # "Dog" (unigram), "hot dog2" (bigram), "42" (number) were there first; "!" is punctuation.
    assert counts["wiki_title"] == {"candidates": 6, "kept": 2, "dropped": 1, "duplicates": 3}
    assert build.stats["unigram_tokens"] == 2**30 + 300 + 200 + 500 + 400 + 150 + 5 + 2
    assert build.sha256 == hashlib.sha256(build.to_json().encode("utf-8")).hexdigest()
    assert build.summary()["num_entries"] == 107


def test_build_metadata_default_is_wordnet_part(wn_entries):
    build = build_metadata(MetadataConfig())
    assert build.entries == wn_entries
    assert build.sources[99:101] == ["number", "wordnet"]
    assert build.per_source_counts["wordnet"]["kept"] == 86_554
    assert build.sha256 == entries_sha256(wn_entries)


def test_bigram_tables_need_unigrams(tmp_path):
    (tmp_path / "bi.txt").write_text("a b 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="need unigram counts"):
        build_metadata(MetadataConfig(wordnet=False, bigram_table_paths=[str(tmp_path / "bi.txt")]))


def test_metadata_json_roundtrip_and_errors(tmp_path):
    entries = ["0", "New York", "café", "jack-o'-lantern"]
    path = tmp_path / "sub" / "metadata.json"
    digest = write_metadata_json(entries, path)
    assert digest == entries_sha256(entries) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_metadata_json(path) == entries
    assert [p.name for p in path.parent.iterdir()] == ["metadata.json"]  # no temp file left behind

    build = build_metadata(MetadataConfig(metadata_json=str(path)))
    assert build.entries == entries and set(build.sources) == {"metadata_json"}

    bad = {
        "dict.json": ('{"dog": 1}', "must be a JSON list of strings, got dict"),
        "mixed.json": ('["dog", 3]', "entry 1 is int"),
        "dupes.json": ('["dog", "dog"]', "duplicated metadata entries"),
        "broken.json": ('["dog",', "not valid JSON"),
    }
    for name, (content, message) in bad.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            build_metadata(MetadataConfig(metadata_json=str(tmp_path / name)))
