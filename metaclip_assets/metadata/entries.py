"""Build (or load) the MetaCLIP metadata: the list of entry strings whose list index is the entry id.

Order and cleanup follow upstream ``build_metadata.py`` (see ../shared/notes/metaclip-facts.md section 1):
numbers -> WordNet -> Wikipedia unigrams -> bigrams -> titles, exact-string dedup where the first source wins,
per-source ``strip()``, empty strings and single ``string.punctuation`` characters dropped, nothing else normalised.
Upstream released ``json.dump(list(set))``, an order we cannot recover; ours is the insertion order above, frozen
and identified by the sha256 of the canonical JSON (see :func:`entries_json`).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from metaclip_assets.metadata import wikipedia
from metaclip_assets.metadata.wordnet import NUMBER_ENTRIES, wordnet_names
from metaclip_assets.storage import file_mode

SOURCES = ("number", "wordnet", "wiki_unigram", "wiki_bigram", "wiki_title", "metadata_json")
_PUNCTUATION = frozenset(string.punctuation)


@dataclass
class MetadataConfig:
    wordnet: bool = True
    wiki_dump_paths: list[str] = field(default_factory=list)  # MediaWiki XML exports -> unigrams + bigrams
    unigram_table_paths: list[str] = field(default_factory=list)  # ready count tables, summed with dump counts
    bigram_table_paths: list[str] = field(default_factory=list)
    ngram_table_layout: wikipedia.TableLayout = "word_count"  # or "count_word" (count<TAB>word[<TAB>word])
    pageview_paths: list[str] = field(default_factory=list)
    min_unigram_count: int = 100
    min_bigram_pmi: float = 30.0
    min_title_hourly_views: int = 50
    min_title_views: int = 70
    metadata_json: str | None = None  # a ready MetaCLIP metadata.json: used as is, nothing is built


def entries_json(entries: list[str]) -> str:
    """Canonical JSON of the entries: the bytes that are hashed and written."""
    return json.dumps(entries, ensure_ascii=False, separators=(",", ":"))


def entries_sha256(entries: list[str]) -> str:
    return hashlib.sha256(entries_json(entries).encode("utf-8")).hexdigest()


@dataclass
class MetadataBuild:
    entries: list[str]
    sources: list[str]  # per entry, one of SOURCES
    # source -> {"candidates": the source's own list (WordNet: its distinct cut names), "kept", "dropped" (empty or
    # single punctuation after strip), "duplicates" (already taken by an earlier source)}
    per_source_counts: dict[str, dict[str, int]]
    sha256: str
    stats: dict[str, int] = field(default_factory=dict)  # input-side numbers (articles, tokens, skipped lines)

    def to_json(self) -> str:
        return entries_json(self.entries)

    def summary(self) -> dict:
        """JSON-able description for asset metadata / data cards (no entry list)."""
        return {
            "num_entries": len(self.entries),
            "sha256": self.sha256,
            "per_source_counts": self.per_source_counts,
            "stats": self.stats,
        }


def _validate(entries: object, where: str) -> list[str]:
    if not isinstance(entries, list):
        raise ValueError(f"{where}: metadata must be a JSON list of strings, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ValueError(f"{where}: metadata entry {i} is {type(entry).__name__} {entry!r}, not a string")
    if len(set(entries)) != len(entries):
        # Entry ids are list positions, so a repeated string would have two ids.
        dupes = [e for e, n in Counter(entries).items() if n > 1]
        raise ValueError(f"{where}: {len(dupes)} duplicated metadata entries, e.g. {dupes[:3]!r}")
    return entries


def load_metadata_json(path: str | Path) -> list[str]:
    """Read a metadata.json (JSON list of unique strings), with a clear error for anything else."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return _validate(data, str(path))


def write_metadata_json(entries: list[str], path: str | Path) -> str:
    """Atomically write the canonical JSON (file sha256 == entries_sha256); returns the sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = entries_json(_validate(entries, str(path))).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # not mkstemp's 0600: other users and pods read metadata too
        os.replace(tmp, path)  # readers see the old file or the complete new one, never a partial write
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def _ngram_counts(config: MetadataConfig, stats: dict[str, int]) -> wikipedia.NgramCounts | None:
    """Dump counts plus table counts; PMI's n_xx is the sum of all unigram counts (nltk's FreqDist.N())."""
    if not (config.wiki_dump_paths or config.unigram_table_paths or config.bigram_table_paths):
        return None
    counts = wikipedia.count_dump_ngrams(config.wiki_dump_paths)
    stats["wiki_articles"] = counts.documents
    stats["wiki_dump_tokens"] = counts.total_tokens
    for key, paths, reader, target in (
        ("unigram_table_skipped_lines", config.unigram_table_paths, wikipedia.read_unigram_table, counts.unigrams),
        ("bigram_table_skipped_lines", config.bigram_table_paths, wikipedia.read_bigram_table, counts.bigrams),
    ):
        stats[key] = 0
        for path in paths:
            table = reader(path, layout=config.ngram_table_layout)
            target.update(table.counts)
            stats[key] += table.skipped_lines
    if config.bigram_table_paths and not counts.unigrams:
        raise ValueError("bigram tables need unigram counts (unigram_table_paths or wiki_dump_paths) for PMI")
    counts.total_tokens = sum(counts.unigrams.values())
    stats["unigram_tokens"] = counts.total_tokens
    return counts


def build_metadata(config: MetadataConfig) -> MetadataBuild:
    """Collect candidates per source in MetaCLIP order, then clean and dedup them (first source wins)."""
    stats: dict[str, int] = {}
    if config.metadata_json:
        entries = load_metadata_json(config.metadata_json)
        n = len(entries)
        return MetadataBuild(
            entries,
            ["metadata_json"] * n,
            {"metadata_json": {"candidates": n, "kept": n, "dropped": 0, "duplicates": 0}},
            entries_sha256(entries),
            stats,
        )

    candidates: list[tuple[str, Iterable[str]]] = [("number", NUMBER_ENTRIES)]
    if config.wordnet:
        candidates.append(("wordnet", wordnet_names()))
    ngrams = _ngram_counts(config, stats)
    if ngrams is not None:
        candidates.append(("wiki_unigram", wikipedia.unigram_entries(ngrams.unigrams, config.min_unigram_count)))
        candidates.append(("wiki_bigram", wikipedia.bigram_entries(ngrams, config.min_bigram_pmi)))
    if config.pageview_paths:
        titles = wikipedia.title_entries(
            config.pageview_paths, min_hourly=config.min_title_hourly_views, min_total=config.min_title_views
        )
        candidates.append(("wiki_title", titles.entries))
        stats.update(
            pageview_files=titles.files, pageview_lines=titles.lines, pageview_skipped_lines=titles.skipped_lines
        )

    seen: dict[str, str] = {}  # entry -> source; dicts keep insertion order, which becomes the entry id
    per_source: dict[str, dict[str, int]] = {}
    for source, items in candidates:
        n = {"candidates": 0, "kept": 0, "dropped": 0, "duplicates": 0}
        for item in items:
            n["candidates"] += 1
            entry = item.strip()
            if not entry or entry in _PUNCTUATION:
                n["dropped"] += 1
            elif entry in seen:
                n["duplicates"] += 1
            else:
                seen[entry] = source
                n["kept"] += 1
        per_source[source] = n
    entries = list(seen)
    return MetadataBuild(entries, list(seen.values()), per_source, entries_sha256(entries), stats)
