"""Wikipedia parts of the MetaCLIP metadata: unigrams, PMI bigrams and popular page titles.

MetaCLIP never shipped its Wikipedia inputs, so every part reads a real public format:

* MediaWiki XML exports (``pages-articles*.xml[.bz2|.gz]``) -> plain text -> token counts;
* ready frequency tables, either ``word count`` / ``w1 w2 count`` lines (v1's ``enwiki-unigram.txt``) or the
  tab-separated, count-first ``count<TAB>word`` / ``count<TAB>w1<TAB>w2`` lines of v1's ``1gram/2gram.txt.gz``;
* hourly pageview dumps from https://dumps.wikimedia.org/other/pageviews/ (``en Main_Page 242332 0``).

Upstream thresholds (defaults here): unigram count >= 100, bigram PMI >= 30, pageviews >= 50 per hourly line and
>= 70 summed. Strings are never normalised (case kept); cleanup and dedup happen in ``metadata.py``.
"""

from __future__ import annotations

import bz2
import gzip
import html
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, NamedTuple

TableLayout = Literal["word_count", "count_word"]


def open_binary(path: str | Path) -> IO[bytes]:
    """Open plain, ``.gz`` or ``.bz2`` files by suffix (dumps come in all three)."""
    path = str(path)
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


# ---------------------------------------------------------------------------------------------- XML dumps


def _local(tag: str) -> str:
    # "{http://www.mediawiki.org/xml/export-0.10/}page" -> "page": the schema version changes between dumps.
    return tag.rpartition("}")[2]


def iter_dump_articles(path: str | Path) -> Iterator[tuple[str, str]]:
    """Stream (title, wikitext) of the main-namespace, non-redirect pages of a MediaWiki XML export.

    Pages without ``<ns>`` (very old schemas) count as namespace 0. A page with several revisions (history dumps)
    yields its last one. Redirects are recognised by ``<redirect>`` or, for old dumps, a ``#REDIRECT`` text.
    """
    with open_binary(path) as fh:
        context = ET.iterparse(fh, events=("start", "end"))
        _event, root = next(context)
        for event, elem in context:
            if event != "end" or _local(elem.tag) != "page":
                continue
            title, ns, redirect, text = "", "0", False, ""
            for child in elem:
                name = _local(child.tag)
                if name == "title":
                    title = child.text or ""
                elif name == "ns":
                    ns = (child.text or "").strip()
                elif name == "redirect":
                    redirect = True
                elif name == "revision":
                    for part in child:
                        if _local(part.tag) == "text":
                            text = part.text or ""
            # Clearing the root drops every finished <page>, so memory stays flat over multi-GB dumps.
            root.clear()
            if ns != "0" or redirect or text.lstrip()[:9].upper() == "#REDIRECT":
                continue
            yield title, text


# ------------------------------------------------------------------------------------- wikitext -> text
# Regex stripping, not a MediaWiki parser: templates, tables, references and media are dropped (they are mostly
# citations and layout, not prose), links keep their shown text. Nested constructs are removed innermost first.

_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# Elements whose content is not prose (citations, formulas, galleries, code).
_DROP_ELEMENT = re.compile(
    r"<(ref|math|chem|ce|gallery|timeline|syntaxhighlight|source|score|graph|imagemap|hiero|templatedata)\b"
    r"[^>]*?(?:/>|>.*?</\1\s*>)",
    re.S | re.I,
)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")  # innermost {{...}}
_TABLE = re.compile(r"^[ \t]*\{\|(?:(?!^[ \t]*\{\|).)*?^[ \t]*\|\}", re.S | re.M)  # innermost {| ... |}
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")  # innermost [[...]]
_EXT_LINK = re.compile(r"\[(?:https?:|ftp:|//)[^\s\]]*(?:\s+([^\]]*))?\]")
_BOLD_ITALIC = re.compile(r"'{2,}")
_HEADING = re.compile(r"^(=+)[ \t]*(.*?)[ \t]*\1[ \t]*$", re.M)
_BR = re.compile(r"<br\s*/?>", re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_LIST_PREFIX = re.compile(r"^[*#:;]+[ \t]*", re.M)
_MAGIC = re.compile(r"__[A-Z]+__")
_SPACES = re.compile(r"[ \t]+")
_LINE_EDGES = re.compile(r"[ \t]*\n[ \t]*")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_DROP_NAMESPACES = {"file", "image", "media", "category"}
# Interlanguage links ([[de:Anarchismus]]) have a language-code prefix and no label.
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z]+)*$")


def _link_text(match: re.Match[str]) -> str:
    target, _pipe, label = match.group(1).partition("|")
    prefix, colon, _rest = target.lstrip(":").partition(":")
    prefix = prefix.strip().lower()
    if colon and prefix in _DROP_NAMESPACES and not target.startswith(":"):
        return ""
    if colon and not label and _LANG_PREFIX.match(prefix):
        return ""
    return label or target.lstrip(":")


def _remove_nested(text: str) -> str:
    # Templates can hold tables and tables hold templates: alternate until neither finds an innermost block.
    while True:
        text, n_templates = _TEMPLATE.subn("", text)
        text, n_tables = _TABLE.subn("", text)
        if not n_templates and not n_tables:
            return text


def wikitext_to_plain(text: str) -> str:
    """Plain prose from wikitext: one paragraph/list item/heading per line (see the module comments above)."""
    text = _COMMENT.sub("", text)
    text = _DROP_ELEMENT.sub("", text)
    text = _remove_nested(text)
    while True:  # links inside file captions are resolved before the file link itself is dropped
        text, n = _LINK.subn(_link_text, text)
        if not n:
            break
    text = _EXT_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BOLD_ITALIC.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _BR.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)  # &nbsp; &ndash; ... written as entities inside the wikitext
    text = _LIST_PREFIX.sub("", text)
    text = _MAGIC.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


# ------------------------------------------------------------------------------------------- counting
# A token is a run of letters/digits, optionally joined by single internal apostrophes or hyphens
# ("rock'n'roll", "Jean-Paul", "1990s"); case is kept. Bigrams pair consecutive tokens of one segment; a segment
# ends at a line break or at any punctuation other than apostrophes and hyphens (so "York, the" is no bigram).
_TOKEN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_SEGMENT_BREAK = re.compile(r"[^\w\s'’-]|[_\n\r\f\v\x85\u2028\u2029]")


def tokenize(text: str) -> list[str]:
    """Tokens of ``text`` by the rule above."""
    return _TOKEN.findall(text)


@dataclass
class NgramCounts:
    unigrams: Counter = field(default_factory=Counter)  # token -> count
    bigrams: Counter = field(default_factory=Counter)  # (w1, w2) -> count
    total_tokens: int = 0  # nltk's word_fd.N(): the PMI denominator n_xx
    documents: int = 0


def count_ngrams(texts: Iterable[str]) -> NgramCounts:
    """Unigram and within-segment bigram counts over plain texts."""
    counts = NgramCounts()
    unigrams, bigrams = counts.unigrams, counts.bigrams
    for text in texts:
        counts.documents += 1
        for segment in _SEGMENT_BREAK.split(text):
            tokens = _TOKEN.findall(segment)
            if tokens:
                unigrams.update(tokens)
                bigrams.update(zip(tokens, tokens[1:]))
                counts.total_tokens += len(tokens)
    return counts


def count_dump_ngrams(paths: Iterable[str | Path]) -> NgramCounts:
    """Counts over the plain text of every article in the given XML dumps."""
    return count_ngrams(wikitext_to_plain(text) for path in paths for _title, text in iter_dump_articles(path))


class Table(NamedTuple):
    counts: Counter
    skipped_lines: int  # wrong field count, non-integer or negative count, invalid UTF-8


def _read_table(path: str | Path, n_words: int, layout: TableLayout) -> Table:
    counts: Counter = Counter()
    skipped = 0
    with open_binary(path) as fh:
        for raw in fh:
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                skipped += 1
                continue
            if not line:
                continue
            fields = [f.strip() for f in line.split("\t")] if layout == "count_word" else line.split()
            if layout == "count_word":
                fields = fields[1:] + fields[:1]  # -> words..., count
            try:
                count = int(fields[-1])
            except ValueError:
                count = -1
            words = tuple(fields[:-1])
            if len(words) != n_words or count < 0 or not all(words):
                skipped += 1
                continue
            if count:  # zero rows are legal but carry nothing (upstream drops them too)
                counts[words[0] if n_words == 1 else words] += count
    return Table(counts, skipped)


def read_unigram_table(path: str | Path, *, layout: TableLayout = "word_count") -> Table:
    """``word count`` lines (``layout="count_word"``: ``count<TAB>word``) -> Counter{word: count}."""
    return _read_table(path, 1, layout)


def read_bigram_table(path: str | Path, *, layout: TableLayout = "word_count") -> Table:
    """``w1 w2 count`` lines (``layout="count_word"``: ``count<TAB>w1<TAB>w2``) -> Counter{(w1, w2): count}."""
    return _read_table(path, 2, layout)


def unigram_entries(counts: Mapping[str, int], min_count: int = 100) -> list[str]:
    """Words with count >= min_count, most frequent first (ties by string, so the order is reproducible)."""
    kept = [(c, w) for w, c in counts.items() if c >= min_count]
    return [w for c, w in sorted(kept, key=lambda cw: (-cw[0], cw[1]))]


def pmi(n_ii: int, n_ix: int, n_xi: int, n_xx: int) -> float:
    """nltk ``BigramAssocMeasures.pmi``: log2(n_ii * n_xx) - log2(n_ix * n_xi) (nltk's _log2 is math.log2)."""
    return math.log2(n_ii * n_xx) - math.log2(n_ix * n_xi)


def bigram_scores(ngrams: NgramCounts) -> Iterator[tuple[tuple[str, str], float]]:
    """PMI of every bigram whose two words are in the unigram table, as nltk's BigramCollocationFinder scores it."""
    unigrams, n_xx = ngrams.unigrams, ngrams.total_tokens
    for (w1, w2), n_ii in ngrams.bigrams.items():
        n_ix, n_xi = unigrams.get(w1, 0), unigrams.get(w2, 0)
        if n_ii > 0 and n_ix > 0 and n_xi > 0:  # upstream skips bigrams with a word missing from the unigrams
            yield (w1, w2), pmi(n_ii, n_ix, n_xi, n_xx)


def bigram_entries(ngrams: NgramCounts, min_pmi: float = 30.0) -> list[str]:
    """``w1 + " " + w2`` for PMI >= min_pmi, highest PMI first (ties by string)."""
    kept = [(score, f"{w1} {w2}") for (w1, w2), score in bigram_scores(ngrams) if score >= min_pmi]
    return [entry for _score, entry in sorted(kept, key=lambda se: (-se[0], se[1]))]


# -------------------------------------------------------------------------------------------- pageviews


@dataclass
class TitleEntries:
    entries: list[str]  # most viewed first (ties by string)
    views: dict[str, int]  # summed qualifying views of every kept title
    files: int = 0
    lines: int = 0
    project_lines: int = 0  # lines of the requested project
    skipped_lines: int = 0  # malformed: not 4 space-separated fields, bad view count, invalid UTF-8


def title_entries(
    paths: Iterable[str | Path], *, project: str = "en", min_hourly: int = 50, min_total: int = 70
) -> TitleEntries:
    """Popular page titles from hourly pageview dumps (``project title views bytes`` lines).

    Only ``project`` lines count (v1: ``en``, desktop; ``en.m`` is mobile). An hourly line adds its views only if
    they are >= min_hourly; titles with ``:`` (other namespaces) are dropped, ``_`` becomes a space; a title is kept
    when its summed views are >= min_total. Titles stay percent-encoded as in the dumps, as upstream kept them.
    """
    totals: Counter = Counter()
    stats = TitleEntries(entries=[], views={})
    for path in paths:
        stats.files += 1
        with open_binary(path) as fh:
            for raw in fh:
                stats.lines += 1
                try:
                    fields = raw.decode("utf-8").strip().split(" ")
                    if len(fields) != 4:
                        raise ValueError
                    views = int(fields[2])
                    if views < 0:
                        raise ValueError
                except ValueError:  # UnicodeDecodeError is a ValueError
                    stats.skipped_lines += 1
                    continue
                if fields[0] != project:
                    continue
                stats.project_lines += 1
                title = fields[1].strip().replace("_", " ")
                if views >= min_hourly and title and ":" not in title:
                    totals[title] += views
    kept = sorted(((v, t) for t, v in totals.items() if v >= min_total), key=lambda vt: (-vt[0], vt[1]))
    stats.entries = [t for _v, t in kept]
    stats.views = {t: v for v, t in kept}
    return stats
