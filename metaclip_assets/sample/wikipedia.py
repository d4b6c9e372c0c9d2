"""Wikipedia inputs for the metadata builder: a small MediaWiki export and hourly pageview files.

Independent of snapshot and seed, so that generating several snapshots into one root writes identical bytes.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import numpy as np

from metaclip_assets import layout
from metaclip_assets.sample.texts import ADJECTIVES, GERUNDS, NOUNS

WIKI_TITLES = (
    "Apple",
    "Bird",
    "Boat",
    "Car",
    "Cat",
    "Clock",
    "Dog",
    "Flower",
    "House",
    "Tree",
    "River",
    "Mountain",
    "Bicycle",
    "Garden",
    "Beach",
    "Bridge",
    "Castle",
    "Coffee",
    "Bread",
    "Pizza",
    "Horse",
    "Elephant",
    "Guitar",
    "Piano",
    "Camera",
    "Volcano",
    "Waterfall",
    "Lake",
    "Forest",
    "Island",
    "Train",
    "Airplane",
    "Tulip",
    "Sunflower",
    "Penguin",
    "Dolphin",
    "Owl",
    "Parrot",
    "Kite",
    "Lantern",
    "Umbrella",
    "Chocolate",
    "Cheese",
    "Tomato",
    "Lemon",
    "Strawberry",
    "Tiger",
    "Lion",
    "Rabbit",
    "Hot dog",
    "New York City",
    "Alarm clock",
    "Apple pie",
)


def base36(digest: bytes) -> str:
    """A revision's <sha1> as MediaWiki writes it: base 36, 31 digits."""
    n, out = int.from_bytes(digest, "big"), ""
    while n:
        n, r = divmod(n, 36)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + out
    return out.rjust(31, "0")


def _article(title: str, rng: np.random.Generator) -> str:
    word = title.lower()
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    sentences = [f"A '''{word}''' is often described as {pick(ADJECTIVES)} and {pick(ADJECTIVES)}."]
    for _ in range(int(rng.integers(6, 12))):
        sentences.append(
            pick(
                [
                    f"The {word} is common near the [[{pick(NOUNS).capitalize()}|{pick(NOUNS)}]].",
                    f"Many {pick(ADJECTIVES)} {pick(NOUNS)}s appear with the {word} in {int(rng.integers(1800, 2020))}.",
                    f"In {pick(['Europe', 'Asia', 'Africa', 'North America'])}, the {word} and the {pick(NOUNS)} are "
                    f"symbols of {pick(NOUNS)}.<ref>{{{{cite book |title={pick(ADJECTIVES).capitalize()} "
                    f"{pick(NOUNS).capitalize()}s |year={int(rng.integers(1950, 2020))}}}}}</ref>",
                    f"A {pick(ADJECTIVES)} {word} can be {pick(GERUNDS)} or {pick(GERUNDS)}.",
                    f"About {int(rng.integers(2, 99))} kinds of {word} are known; the {pick(ADJECTIVES)} one is rare.",
                ]
            )
        )
    half = len(sentences) // 2
    return (
        "{{Short description|"
        + f"{pick(ADJECTIVES).capitalize()} {word}"
        + "}}\n"
        + " ".join(sentences[:half])
        + "\n\n== Description ==\n"
        + " ".join(sentences[half:])
        + "\n\n== See also ==\n* [["
        + pick(WIKI_TITLES)
        + "]]\n\n[[Category:"
        + pick(["Animals", "Objects", "Plants", "Places", "Food"])
        + "]]"
    )


def write_wikipedia(root: Path) -> dict:
    rng = np.random.default_rng(20240301)
    out = root / layout.WIKIPEDIA_DIR
    (root / layout.PAGEVIEWS_DIR).mkdir(parents=True, exist_ok=True)
    pages = [(t, 0, _article(t, rng), None) for t in WIKI_TITLES]
    pages.insert(3, ("Apples", 0, "#REDIRECT [[Apple]]\n\n{{R from plural}}", "Apple"))
    pages.append(("Talk:Dog", 1, "== Picture ==\nThe lead picture of the dog looks blurry. ~~~~", None))
    xml = [
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.mediawiki.org/xml/'
        'export-0.10/ http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">',
        "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>enwiki</dbname>\n"
        "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n    <generator>MediaWiki 1.27.0-wmf.22"
        "</generator>\n    <case>first-letter</case>\n    <namespaces>\n"
        '      <namespace key="0" case="first-letter" />\n'
        '      <namespace key="1" case="first-letter">Talk</namespace>\n'
        '      <namespace key="14" case="first-letter">Category</namespace>\n    </namespaces>\n  </siteinfo>',
    ]
    for i, (title, ns, text, redirect) in enumerate(pages):
        red = f'\n    <redirect title="{xml_escape(redirect, {chr(34): "&quot;"})}" />' if redirect else ""
        data = text.encode()
        xml.append(
            f"  <page>\n    <title>{xml_escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{100 + i}</id>{red}\n"
            f"    <revision>\n      <id>{700000000 + i}</id>\n      <parentid>{690000000 + i}</parentid>\n"
            f"      <timestamp>2024-02-{1 + i % 28:02d}T12:00:00Z</timestamp>\n"
            f"      <contributor>\n        <username>SampleEditor</username>\n        <id>42</id>\n"
            f"      </contributor>\n      <comment>sample article</comment>\n      <model>wikitext</model>\n"
            f"      <format>text/x-wiki</format>\n"
            f'      <text xml:space="preserve" bytes="{len(data)}">{xml_escape(text)}</text>\n'
            f"      <sha1>{base36(hashlib.sha1(data).digest())}</sha1>\n    </revision>\n  </page>"
        )
    xml.append("</mediawiki>\n")
    dump = out / "enwiki-sample-pages-articles.xml.bz2"
    dump.write_bytes(bz2.compress("\n".join(xml).encode(), 9))

    # Pageviews: `project title views bytes` lines; en desktop, en.m mobile, de; titles with ':' and '_'.
    titles = (
        ["Main_Page", "Special:Search"]
        + [t.replace(" ", "_") for t in WIKI_TITLES]
        + ["Talk:Dog", "File:Dog.jpg", "Category:Fruits"]
    )
    en_views: dict[str, int] = {}
    for hour in (12, 13, 14):
        lines = []
        for rank, t in enumerate(titles):
            views = int(2000 / (rank + 1) ** 1.2 * rng.uniform(0.5, 1.5)) + int(rng.integers(0, 40))
            lines.append(("en", t, views))
            lines.append(("en.m", t, int(views * rng.uniform(0.3, 2.0))))
        lines += [("de", "Apfel", 77), ("de", "Hund", 64), ("de", "Äpfel", 12), ("en", "Edge_case", 49 + hour - 12)]
        text = "".join(f"{p} {t} {v} 0\n" for p, t, v in sorted(lines))
        (root / layout.PAGEVIEWS_DIR / f"pageviews-20240301-{hour}0000.gz").write_bytes(
            gzip.compress(text.encode(), mtime=0)
        )
        for p, t, v in lines:
            if p == "en" and v >= 50 and ":" not in t:  # MetaCLIP's hourly filter, before its sum threshold
                key = t.replace("_", " ")
                en_views[key] = en_views.get(key, 0) + v
    return {
        "dump": dump.relative_to(root).as_posix(),
        "pages": len(pages),
        "articles_ns0": len(WIKI_TITLES),
        "redirects": 1,
        "other_namespace": 1,
        "pageview_files": 3,
        "en_title_views_hourly_ge_50": dict(sorted(en_views.items())),
    }
