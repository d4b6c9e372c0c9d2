"""Deterministic alt-text-like texts for the matching benchmarks.

Shape (performance.md "Corpus"): 3-30 words drawn from a Zipf distribution over a vocabulary that overlaps the
metadata's single words (so most texts match several entries), ~55% with 1-3 metadata entries spliced in (multi-word
ones included), mixed case, punctuation among the 7 characters MetaCLIP spaces out and others it does not, file names
(``IMG_2043.JPG``), prices, some TAB/LF/CRLF, double spaces, and ~6% non-English texts (accents, Cyrillic, CJK, Arabic)
that mostly match nothing. No network, no shared data: anyone can regenerate the same list from (metadata, n, seed).

Usage: python bench/gen_texts.py METADATA.json OUT.jsonl [--texts 200000] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling gen_metadata when imported from elsewhere

_FOREIGN = [
    "Schöne Grüße aus München und der Straße",
    "café crème à la française, très élégant",
    "niño jugando en el jardín con su perro",
    "Москва красная площадь ночью",
    "東京タワーの夜景",
    "北京故宫博物院",
    "서울 야경 사진",
    "مدينة دبي في الليل",
    "Ελληνικό νησί το καλοκαίρι",
    "İstanbul Boğazı manzarası",
]
_FILE_EXT = [".jpg", ".JPG", ".jpeg", ".png", ".gif", ".webp"]
_PUNCT_TAIL = [",", ".", "!", "?", ":", ";", " -", " |", "...", ")", "'", '"', "/", " &"]
_JOINERS = [" ", " ", " ", " ", " ", " ", " ", " ", " - ", " | ", ", ", ": ", "  ", "\t", "\n", "\r\n", " / "]


def _vocab(metadata: list[str], rng: random.Random) -> tuple[list[str], list[float]]:
    """Frequent English words first, then the metadata's other single words (plus some inflections and non-entry
    strings) in a shuffled order; Zipf weights 1/rank**1.07 over that order (cumulative, for random.choices)."""
    from gen_metadata import COMMON_WORDS

    head = list(dict.fromkeys(COMMON_WORDS))
    seen = set(head)
    rest = sorted({w for e in metadata for w in e.split(" ") if w and len(w) < 20 and w not in seen})
    rest += [w + "s" for w in rest[::7]] + [
        "".join(rng.choice("bcdfghklmnprstvz") for _ in range(5)) for _ in range(2000)
    ]
    rng.shuffle(rest)
    words = head + rest
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 1.07 for r in range(len(words))))
    return words, cum


def _file_name(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.4:
        return f"IMG_{rng.randint(1000, 9999)}{rng.choice(_FILE_EXT)}"
    if r < 0.7:
        return f"DSC{rng.randint(10000, 99999)}{rng.choice(_FILE_EXT)}"
    return f"photo-{rng.randint(2005, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}{rng.choice(_FILE_EXT)}"


def iter_texts(metadata: list[str], seed: int = 0) -> Iterator[str]:
    """Endless deterministic stream of alt-text-like strings (see the module docstring)."""
    rng = random.Random(seed)
    words, cum = _vocab(metadata, rng)
    multi = [e for e in metadata if " " in e] or metadata
    while True:
        r = rng.random()
        if r < 0.06:
            yield rng.choice(_FOREIGN) + rng.choice(["", " " + rng.choice(words), " 2023"])
            continue
        if r < 0.09:
            yield _file_name(rng)
            continue
        n = rng.randint(3, 25) if rng.random() < 0.35 else rng.randint(2, 10)
        toks = rng.choices(words, cum_weights=cum, k=n)
        if rng.random() < 0.55:  # splice in whole entries, some multi-word
            for _ in range(rng.randint(1, 3)):
                e = rng.choice(multi) if rng.random() < 0.6 else rng.choice(metadata)
                toks.insert(rng.randrange(len(toks) + 1), e)
        style = rng.random()
        if style < 0.35:
            toks[0] = toks[0].capitalize()
        elif style < 0.45:
            toks = [t.capitalize() for t in toks]
        elif style < 0.48:
            toks = [t.upper() for t in toks]
        out = [toks[0]]
        for t in toks[1:]:
            if rng.random() < 0.12:
                out.append(rng.choice(_PUNCT_TAIL))
            out.append(rng.choice(_JOINERS) if rng.random() < 0.25 else " ")
            out.append(t)
        r = rng.random()
        if r < 0.05:
            out.append(" " + _file_name(rng))
        elif r < 0.09:
            out.append(f" ${rng.randint(1, 999)}.{rng.randint(0, 99):02d}")
        elif r < 0.20:
            out.append(rng.choice([".", "!", " ...", " - Stock Photo", " | Free Download", " (2)"]))
        yield "".join(out)


def generate_texts(metadata: list[str], num_texts: int = 200_000, seed: int = 0) -> list[str]:
    return list(itertools.islice(iter_texts(metadata, seed), num_texts))


def load_metadata(path: Path) -> list[str]:
    return json.loads(Path(path).read_text())


def write_texts(texts: list[str], path: Path) -> None:
    Path(path).write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))


def read_texts(path: Path) -> list[str]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("metadata", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--texts", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    texts = generate_texts(load_metadata(args.metadata), args.texts, args.seed)
    write_texts(texts, args.out)
    print(f"{len(texts):,} texts, mean {sum(map(len, texts)) / len(texts):.1f} chars -> {args.out}")


if __name__ == "__main__":
    main()
