"""MetaCLIP 2 worldwide matching and balancing (curation/worldwide.py): each boundary rule on hand-written vectors,
equality with v1 where the rules coincide, p <-> t on a hand-computed example, one text per image independent of
order and splitting, and the per-language card pieces."""

from __future__ import annotations

import random
import string

import numpy as np
import polars as pl
import pytest

from metaclip_assets.curation.balancing import tail_share
from metaclip_assets.curation.matching import Matcher, spacing
from metaclip_assets.curation.worldwide import (
    CJK_PUNCTUATION,
    WorldwideMatcher,
    balance_worldwide,
    choice_scores,
    count_by_language,
    image_choices,
    is_cjk_like,
    keep_chosen,
    language_probabilities,
    language_ranges,
    language_rows,
    language_table_markdown,
    language_thresholds,
    merge_image_choices,
    one_text_per_image,
    pad_entry,
    pairs_by_language_png,
    t_for_tail_share,
)
from metaclip_assets_tests.curation.test_matching import _SEPS, _WORDS, _random_metadata, _random_text

# ---- the CJK-like character set --------------------------------------------------------------------------------

# Upstream's is_cjk_or_similar ranges (substr_matching.py lines 74-95), written out by hand.
_RANGES = (
    "4E00-9FFF 3400-4DBF 20000-2A6DF 2A700-2B73F 2B740-2B81F 2B820-2CEAF 2CEB0-2EBEF F900-FAFF 2E80-2EFF 2F00-2FDF "
    "2FF0-2FFF 0E00-0E7F 0E80-0EFF 1000-109F 1780-17FF 0F00-0FFF"
)


def test_cjk_like_ranges_edges():
    bounds = [tuple(int(x, 16) for x in r.split("-")) for r in _RANGES.split()]
    inside = lambda cp: any(lo <= cp <= hi for lo, hi in bounds)
    for lo, hi in bounds:
        assert is_cjk_like(chr(lo)) and is_cjk_like(chr(hi))
        for cp in (lo - 1, hi + 1):
            assert is_cjk_like(chr(cp)) == inside(cp), hex(cp)


def test_cjk_like_punctuation_and_what_is_not():
    assert len(CJK_PUNCTUATION) == 25
    assert set("，。、；：？！“”‘’（）【】《》〈〉「」『』～—") == CJK_PUNCTUATION
    assert all(is_cjk_like(c) for c in string.punctuation + "".join(CJK_PUNCTUATION))
    # As released: kana (incl. the prolonged sound mark), Hangul, full-width Latin, the ideographic space and
    # the Japanese middle dot are NOT CJK-like, nor are letters, digits and whitespace.
    for c in "あターㇰ한ＡＢ\u3000・a Z 0\t\u00a0é¿":  # ¿ is in build_metadata.py's list only
        assert not is_cjk_like(c), repr(c)


def test_pad_entry():
    assert pad_entry("dog") == " dog "
    assert pad_entry("東京") == "東京"
    assert pad_entry("東京タワー") == "東京タワー "  # ー (U+30FC) is Katakana: padded
    assert pad_entry("タワー") == " タワー "
    assert pad_entry("C++") == " C++"
    assert pad_entry("'hood") == "'hood "
    assert pad_entry("中国NBA") == "中国NBA "
    assert pad_entry("(dog)") == "(dog)"
    with pytest.raises(ValueError, match="empty"):
        pad_entry("")


# ---- matching per language -------------------------------------------------------------------------------------


def _matched(metadata: dict[str, list[str]], text: str, lang: str) -> set[str]:
    """Entry strings matched, checked against the plain-loop definition of the rule."""
    m = WorldwideMatcher(metadata)
    got = m.match(text, lang)
    spaced = spacing(text)
    start = m.ranges[lang][0] if lang in m.ranges else 0
    ref = [start + i for i, e in enumerate(metadata.get(lang, [])) if pad_entry(e) in spaced]
    assert got == ref
    return {m.entries[g] for g in got}


def test_cjk_inside_cjk():
    ja = {"ja": ["東京", "タワー", "東京タワー", "京"]}
    assert _matched(ja, "東京タワー", "ja") == {"東京", "東京タワー", "京"}
    # Katakana edges are padded: タワー needs spaces, 東京タワー needs a space (or the text's end) after it.
    assert _matched(ja, "東京 タワー", "ja") == {"東京", "タワー", "京"}
    assert _matched(ja, "東京タワーに行く", "ja") == {"東京", "京"}
    assert _matched(ja, "東京タワー。", "ja") == {"東京", "京"}  # 。 is not spaced out by `spacing`
    assert _matched(ja, "東京タワー.", "ja") == {"東京", "東京タワー", "京"}  # ASCII . is


def test_thai_lao_khmer_myanmar_tibetan_inside_words():
    md = {"th": ["แมว", "รัก"], "lo": ["ແມວ"], "km": ["ឆ្មា"], "my": ["ကြောင်"], "bo": ["ཞི་མི"]}
    assert _matched(md, "ฉันรักแมวมาก", "th") == {"แมว", "รัก"}
    assert _matched(md, "ຂ້ອຍຮັກແມວ", "lo") == {"ແມວ"}
    assert _matched(md, "ខ្ញុំស្រលាញ់ឆ្មា", "km") == {"ឆ្មា"}
    assert _matched(md, "ကျွန်တော်ကြောင်ကိုချစ်တယ်", "my") == {"ကြောင်"}
    assert _matched(md, "ངའི་ཞི་མི་", "bo") == {"ཞི་མི"}


def test_punctuation_edges():
    en = {"en": ["C++", "C", "(dog)", "'hood", "dog", "U.S.", "a-list", "「東京」"]}
    assert _matched(en, "I love C+++ and C", "en") == {"C++", "C"}  # " C++" is a substring of " C+++ "
    assert _matched(en, "XC++ rocks", "en") == set()  # the left edge C is padded
    assert _matched(en, "hot(dog)s", "en") == {"(dog)"}
    assert _matched(en, "the'hood dog", "en") == {"'hood", "dog"}  # v1: no "'hood" (" 'hood " not in the text)
    assert Matcher(en["en"]).match("the'hood dog") == [4]
    assert _matched(en, "U.S. a-list", "en") == {"a-list"}  # `spacing` splits "U.S." as in v1
    assert _matched(en, "行く「東京」へ", "en") == {"「東京」"}


def test_mixed_scripts_and_latin_entries_in_cjk_text():
    zh = {"zh": ["NBA", "比赛", "中国NBA", "5"], "ja": ["iPhone", "ケース"]}
    assert _matched(zh, "我喜欢NBA比赛", "zh") == {"比赛"}  # Latin edges need spaces
    assert _matched(zh, "我喜欢 NBA 比赛", "zh") == {"NBA", "比赛"}
    assert _matched(zh, "看中国NBA 直播", "zh") == {"中国NBA"}
    assert _matched(zh, "买了5个苹果", "zh") == set()  # numbers are padded: "5" needs spaces
    assert _matched(zh, "新しいiPhoneケース", "ja") == set()
    assert _matched(zh, "新しい iPhone ケース", "ja") == {"iPhone", "ケース"}


def test_text_matches_only_its_own_language():
    md = {"en": ["dog", "Tokyo"], "ja": ["東京", "dog"], "zh": ["东京"]}
    m = WorldwideMatcher(md)
    assert m.languages == ("en", "ja", "zh") and m.ranges == {"en": (0, 2), "ja": (2, 4), "zh": (4, 5)}
    assert m.entries == ("dog", "Tokyo", "東京", "dog", "东京")
    assert m.entry_index("ja", 1) == 3 and m.entries[m.entry_index("zh", 0)] == "东京"
    with pytest.raises(IndexError):
        m.entry_index("zh", 1)
    assert m.entry_language(np.array([0, 1, 2, 3, 4])).tolist() == ["en", "en", "ja", "ja", "zh"]
    text = "dog in 東京 and 东京"
    assert m.match(text, "en") == [0]
    assert m.match(text, "ja") == [2, 3]
    assert m.match(text, "zh") == [4]
    for lang in ("other", "de", None):  # no metadata for the language: no matches
        assert m.match(text, lang) == []
    offsets, ids = m.match_batch([text] * 5, ["zh", "other", "en", None, "ja"])
    assert offsets.tolist() == [0, 1, 1, 2, 2, 4] and ids.tolist() == [4, 0, 2, 3]
    assert offsets.dtype == np.int64 and ids.dtype == np.uint32
    series = m.match_batch(pl.Series([text, text]), pl.Series(["ja", "en"]))
    assert series[0].tolist() == [0, 2, 3] and series[1].tolist() == [2, 3, 0]


def test_match_batch_edge_cases():
    m = WorldwideMatcher({"en": ["dog"], "zh": ["狗", "狗"]})
    offsets, ids = m.match_batch([], [])
    assert offsets.tolist() == [0] and ids.tolist() == []
    assert m.match("狗狗", "zh") == [1, 2]  # a duplicated entry reports every id, once per text
    assert m.match("a\x00 dog", "en") == [0]  # NUL texts take the automaton path of v1's matcher
    offsets, ids = m.match_batch(["狗\x00", "x", "\x00狗"], ["zh"] * 3)  # and text by text in the edge automaton
    assert offsets.tolist() == [0, 2, 2, 4] and ids.tolist() == [1, 2, 1, 2]
    nul = WorldwideMatcher({"zh": ["東\x00京", "京"]})  # an edge entry with a NUL could join two texts
    offsets, ids = nul.match_batch(["東", "京", "東\x00京"], ["zh"] * 3)
    assert offsets.tolist() == [0, 0, 1, 3] and ids.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="2 texts but 1"):
        m.match_batch(["a", "b"], ["en"])
    with pytest.raises(ValueError, match="entry 1 of 'en' is empty"):
        WorldwideMatcher({"en": ["dog", ""]})
    assert WorldwideMatcher({"en": ["a"]}).fingerprint != WorldwideMatcher({"de": ["a"]}).fingerprint


def _v1_rule_only(md: list[str]) -> list[str]:
    return [e for e in md if not (is_cjk_like(e[0]) or is_cjk_like(e[-1]))]


def test_equals_v1_for_entries_with_space_separated_edges():
    rng = random.Random(18)
    md = _v1_rule_only(_random_metadata(rng))
    texts = [_random_text(rng) for _ in range(2000)]
    v1 = Matcher(md).match_batch(texts)
    de = ["Hund", "Katze", "dog"]
    m = WorldwideMatcher({"de": de, "en": md})
    offsets, ids = m.match_batch(texts, ["en"] * len(texts))
    np.testing.assert_array_equal(offsets, v1[0])
    np.testing.assert_array_equal(ids, v1[1] + len(de))  # English ids follow German's
    assert len(ids) > 1000


def test_engine_equals_plain_loop_on_mixed_scripts():
    # Random entries and texts mixing Latin, CJK, kana, Thai and punctuation edges, in two languages: the fast
    # engines (v1's token table + the edge automaton) against the plain loop over padded entries.
    rng = random.Random(2507)
    words = _WORDS + ["東京", "タワー", "京", "แมว", "C++", "+", "(", "「", "」", "ー", "，", "NBA", "'s"]
    seps = _SEPS + ["", "", "。", "、", " "]
    md = {
        lang: sorted(
            {
                "".join(rng.choice(words) + rng.choice(["", " ", "-"]) for _ in range(rng.randint(1, 3))).strip()
                for _ in range(150)
            }
            - {""}
        )
        for lang in ("ja", "xx")
    }
    texts = ["".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(0, 12))) for _ in range(1500)]
    langs = [rng.choice(["ja", "xx", "other"]) for _ in texts]
    m = WorldwideMatcher(md)
    offsets, ids = m.match_batch(texts, langs)
    hits = 0
    for k, (text, lang) in enumerate(zip(texts, langs)):
        spaced = spacing(text)
        start = m.ranges.get(lang, (0, 0))[0]
        ref = [start + i for i, e in enumerate(md.get(lang, [])) if pad_entry(e) in spaced]
        assert ids[offsets[k] : offsets[k + 1]].tolist() == ref, (text, lang)
        hits += bool(ref)
    assert hits > 500
    assert sum(1 for e in md["ja"] if pad_entry(e) != f" {e} ") > 30  # the edge automaton is exercised


def test_real_wordnet_english_equals_v1_except_punctuation_edged_entries():
    from metaclip_assets.metadata.wordnet import wordnet_entries
    from metaclip_assets_tests.curation.test_matching import _wordnet_texts

    md = wordnet_entries()
    edged = [i for i, e in enumerate(md) if pad_entry(e) != f" {e} "]
    assert [md[i] for i in edged] == ["'hood", "april fools'"]  # the only WordNet entries whose rule changes
    texts = _wordnet_texts(md, 2000, seed=3) + ["the'hood on april fools' day"]
    v1 = Matcher(md).match_batch(texts)
    ww = WorldwideMatcher({"en": md}).match_batch(texts, ["en"] * len(texts))
    for k in range(len(texts)):
        a = set(v1[1][v1[0][k] : v1[0][k + 1]].tolist())
        b = set(ww[1][ww[0][k] : ww[0][k + 1]].tolist())
        assert a - set(edged) == b - set(edged), texts[k]
    assert {md[i] for i in ww[1][ww[0][-2] : ww[0][-1]].tolist()} >= {"'hood", "april fools'"}


# ---- p <-> t ---------------------------------------------------------------------------------------------------


def _upstream_p_to_t(counts: np.ndarray, p: float) -> int:
    # curate.py p_to_t, zeros included (the definition our version follows whenever it gives t > 0)
    c = np.sort(counts)
    return int(c[np.abs(np.cumsum(c) / c.sum() - p).argmin()])


def test_p_t_hand_computed():
    en = np.array([50, 1, 30, 2, 10, 3, 4], dtype=np.uint64)  # total 100
    xx = np.array([80, 0, 1, 6, 1, 10, 0, 2], dtype=np.uint64)  # total 100
    # English tail at t_en = 10: 1 + 2 + 3 + 4 = 10 of 100 -> p = 0.10
    assert tail_share(en, 10) == pytest.approx(0.10)
    # xx sorted 1, 1, 2, 6, 10, 80: cumulative shares .01 .02 .04 .10 .20 1.0 -> closest to .10 is at count 6
    assert t_for_tail_share(xx, 0.10) == 6.0 == _upstream_p_to_t(xx, 0.10)
    assert tail_share(xx, 6) == pytest.approx(0.04)  # count < t leaves the entry at t out: below p
    # ties go to the first: shares .25 .5 1.0, p = .375 is .125 from both
    assert t_for_tail_share(np.array([10, 5, 5]), 0.375) == 5.0
    assert t_for_tail_share(xx, 1.0) == 80.0 and t_for_tail_share(xx, 0.0) == 1.0

    counts = np.concatenate([en, xx, np.zeros(3, dtype=np.uint64)])
    ranges = language_ranges({"en": [""] * 7, "xx": [""] * 8, "yy": [""] * 3})
    p, ts = language_thresholds(counts, ranges, t_en=10)
    assert p == pytest.approx(0.10) and ts == {"en": 10.0, "xx": 6.0, "yy": float("inf")}
    prob = language_probabilities(counts, ranges, ts)
    assert prob.dtype == np.float32
    expected_en = [10 / 50, 1, 10 / 30, 1, 1, 1, 1]  # t / max(count, t)
    expected_xx = [6 / 80, 1, 1, 1, 1, 6 / 10, 1, 1]
    np.testing.assert_array_equal(prob, np.array(expected_en + expected_xx + [1, 1, 1], dtype=np.float32))


def test_t_for_tail_share_equals_upstream_and_fixes_its_zero_case():
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = (rng.pareto(1.0, rng.integers(5, 300)) * 10).astype(np.uint64)
        c[rng.random(len(c)) < 0.3] = 0
        p = float(rng.random())
        if c.sum() == 0 or _upstream_p_to_t(c, p) == 0:
            continue
        assert t_for_tail_share(c, p) == _upstream_p_to_t(c, p)
    one = np.array([0, 0, 0, 100], dtype=np.uint64)
    assert _upstream_p_to_t(one, 0.06) == 0  # upstream: t = 0, every probability 0 -> the language is dropped
    assert t_for_tail_share(one, 0.06) == 100.0  # ours: its only entry keeps probability 1
    with pytest.raises(ValueError, match="no matches"):
        t_for_tail_share(np.zeros(4), 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        t_for_tail_share(one, 1.5)


def test_thresholds_need_english_matches_or_explicit_p():
    ranges = {"en": (0, 2), "xx": (2, 5)}
    counts = np.array([0, 0, 5, 1, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match="pass p explicitly"):
        language_thresholds(counts, ranges)
    p, ts = language_thresholds(counts, ranges, p=0.3)
    assert p == 0.3 and ts["xx"] == 1.0 and ts["en"] == 170_000.0
    with pytest.raises(ValueError, match="cover 5 entries"):
        language_thresholds(counts[:4], ranges)


# ---- one text per image ----------------------------------------------------------------------------------------


def _pairs(images: int, texts_per_image: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = images * texts_per_image
    return pl.DataFrame(
        {
            "pair_id": pl.Series(rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64), dtype=pl.UInt64),
            "image_uuid": [f"img{k // texts_per_image:06d}" for k in range(n)],
            "lang": ["en"] * n,
            "entry_ids": pl.Series([[k % 4] for k in range(n)], dtype=pl.List(pl.UInt32)),
        }
    )


def test_one_text_per_image_independent_of_order_and_splitting():
    df = _pairs(3000, 3)
    chosen = one_text_per_image(df, seed=5)
    assert len(chosen) == 3000 and chosen["image_uuid"].n_unique() == 3000
    shuffled = one_text_per_image(df.sample(fraction=1.0, shuffle=True, seed=1), seed=5)
    assert set(shuffled["pair_id"].to_list()) == set(chosen["pair_id"].to_list())
    # Split by pair_id range (as the snapshot buckets are): per-part choices merged give the same choice, and any
    # part filtered with the merged choices holds exactly its share of the chosen texts.
    parts = [df.filter(pl.col("pair_id") % 4 == b) for b in range(4)]
    merged = merge_image_choices([image_choices(part, seed=5) for part in parts])
    assert merged.sort("image_uuid").equals(image_choices(df, seed=5).sort("image_uuid"))
    from_parts = pl.concat([one_text_per_image(part, seed=5, choices=merged) for part in parts])
    assert set(from_parts["pair_id"].to_list()) == set(chosen["pair_id"].to_list())
    assert set(one_text_per_image(df, seed=6)["pair_id"].to_list()) != set(chosen["pair_id"].to_list())


def test_choice_is_uniform_over_an_images_texts():
    df = _pairs(6000, 3).with_columns(position=pl.int_range(pl.len()) % 3)
    share = one_text_per_image(df, seed=0)["position"].value_counts().sort("position")["count"].to_numpy() / 6000
    np.testing.assert_allclose(share, 1 / 3, atol=0.02)
    assert choice_scores(np.array([7], dtype=np.uint64), 0)[0] != choice_scores(np.array([7], dtype=np.uint64), 1)[0]


def test_keep_chosen_closed_form_and_one_draw():
    n = 20_000
    pair_ids = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int64)  # two entries per text: 0 and 1
    ids = np.tile(np.array([0, 1], dtype=np.uint32), n)
    prob = np.array([0.3, 0.5, 1.0], dtype=np.float32)
    keep = keep_chosen(pair_ids, offsets, ids, prob, seed=1)
    assert abs(keep.mean() - (1 - 0.7 * 0.5)) < 0.015  # 1 - prod(1 - p) = 0.65
    order = np.random.default_rng(0).permutation(n)
    np.testing.assert_array_equal(keep_chosen(pair_ids[order], offsets, ids, prob, seed=1), keep[order])
    tail = keep_chosen(pair_ids, offsets, np.tile(np.array([0, 2], dtype=np.uint32), n), prob, seed=1)
    assert tail.all()  # an entry with p = 1 always keeps its text
    empty = keep_chosen(pair_ids[:2], np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.uint32), prob)
    assert not empty.any()


def test_balance_worldwide():
    df = _pairs(4000, 2, seed=3)
    prob = np.array([1.0, 0.5, 0.25, 0.1], dtype=np.float32)  # entry k % 4 per text
    curated, stats = balance_worldwide(df, prob, seed=9)
    assert stats.matched == 8000 and stats.images == 4000 and stats.curated == len(curated)
    assert curated["image_uuid"].n_unique() == len(curated)
    assert abs(stats.curated - stats.expected_curated) < 4 * np.sqrt(stats.expected_curated)
    again, _ = balance_worldwide(df.reverse(), prob, seed=9)
    assert set(again["pair_id"].to_list()) == set(curated["pair_id"].to_list())
    assert set(curated["pair_id"].to_list()) <= set(one_text_per_image(df, seed=9)["pair_id"].to_list())


# ---- data card per language ------------------------------------------------------------------------------------


def test_language_rows_table_and_plot():
    counts = np.array([50, 1, 30, 2, 10, 3, 4, 80, 0, 1, 6, 1, 10, 0, 2], dtype=np.uint64)
    ranges = {"en": (0, 7), "xx": (7, 15)}
    p, ts = language_thresholds(counts, ranges, t_en=10)
    assert count_by_language(["en", "xx", None, "en", "other"]) == {"en": 2, "xx": 1, "other": 2}
    rows = language_rows(
        counts,
        ranges,
        ts,
        pool_pairs={"en": 200, "xx": 50, "other": 70},
        matched_pairs={"en": 100, "xx": 20},
        curated_pairs={"en": 40, "xx": 15},
    )
    assert [r["lang"] for r in rows] == ["en", "other", "xx"]
    en, other, xx = rows
    assert en == {
        "lang": "en",
        "pool_pairs": 200,
        "matched_pairs": 100,
        "curated_pairs": 40,
        "matched_share": 0.5,
        "entries": 7,
        "entries_matched": 7,
        "t": 10.0,
        "tail_share": 0.1,
        "head_entries": 3,
    }
    assert xx["t"] == 6.0 and xx["tail_share"] == 0.04 and xx["head_entries"] == 3 and xx["entries_matched"] == 6
    assert other["t"] is None and other["entries"] == 0 and other["matched_share"] == 0.0
    md = language_table_markdown(rows, p, 10)
    assert "p = **10.00%**" in md and "| xx | 50 | 20 | 15 | 0.4 |" in md
    png = pairs_by_language_png(rows, "pairs by language", top=2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
