"""Words and texts of the sample: the vocabulary, MetaCLIP's text cleaning, and the caption generator.

Every vocabulary word is a WordNet 3.0 synset head name, so each caption matches real metadata. Alt texts mix
Zipf-distributed captions with texts that match no metadata entry and messy whitespace/punctuation variants.
"""

from __future__ import annotations

import bisect

import numpy as np

# --------------------------------------------------------------------------------------------------------------
# Vocabulary. Every word below is a WordNet 3.0 synset head name (checked against wordnet_part_86654.json during
# development; test_sample re-checks it when ../shared is present), so each caption matches real metadata.
# --------------------------------------------------------------------------------------------------------------
CLASSES = ("apple", "bird", "boat", "car", "cat", "clock", "dog", "flower", "house", "tree")
# Occasional synonyms: web captions do not always use the class word.
SYNONYMS = {
    "dog": "puppy",
    "cat": "kitten",
    "boat": "sailboat",
    "car": "automobile",
    "flower": "blossom",
    "bird": "songbird",
    "clock": "timepiece",
}
ANIMATE = {"dog", "cat", "bird"}
ADJECTIVES = (
    "red blue green white black old new small big beautiful little yellow brown cute happy large modern vintage "
    "wooden young orange pink purple grey gold silver antique rustic bright dark wet dry hot cold fresh sweet tall "
    "short long round square empty full open closed broken clean dirty cloudy gray"
).split()
NOUNS = (
    "table garden beach park street city river kitchen window sky tree grass snow field road mountain lake sea "
    "forest bridge house sun cloud rain door chair bed sofa room floor wall roof fence path hill valley island "
    "desert winter summer spring sunset night morning wedding party christmas birthday family friend child girl "
    "boy man woman train bus bicycle airplane ship horse cow sheep fish cake bread pizza coffee tea cup plate bowl "
    "book telephone computer lamp shirt dress hat shoe bag ball toy tower castle church temple market shop "
    "restaurant cafe office school bathroom bedroom carpet rug pillow blanket candle mirror vase basket box bottle "
    "glass wine beer juice milk cheese egg chicken beef salad soup rice pasta sandwich cookie chocolate fruit "
    "banana orange grape lemon strawberry cherry tomato potato carrot onion pepper garlic mushroom leaf rose tulip "
    "daisy sunflower lily butterfly bee spider snake turtle frog rabbit mouse deer bear wolf fox lion tiger "
    "elephant monkey zebra giraffe duck owl eagle parrot penguin dolphin whale shark photograph picture painting "
    "drawing sketch poster map guitar piano violin drum camera television radio watch necklace umbrella desk "
    "shelf stairs balcony pool fountain statue bench harbor canoe kayak truck tractor motorcycle helmet tent "
    "campfire backpack compass ticket letter envelope pencil notebook paper scissors hammer ladder bucket shovel "
    "wheel engine rocket moon star volcano waterfall cave canyon glacier reef coral pebble rock stone sand dune "
    "vineyard farm barn kite balloon flag goat pig pony lamb squirrel hedgehog swan pigeon sparrow robin heron "
    "flamingo peacock maple oak pine palm birch willow cactus fern moss ivy orchid lotus poppy lavender"
).split()
GERUNDS = (
    "running sitting playing standing eating sleeping flying swimming jumping reading cooking drinking "
    "dancing singing riding fishing"
).split()
# Texts that match no WordNet entry: camera/CMS file names, hashes, unspaced CJK, other scripts, made-up brands.
FOREIGN = (
    "東京の夜景",
    "猫と犬の写真",
    "美味しいラーメン",
    "桜の花",
    "北京烤鸭",
    "美丽的风景",
    "Красивый закат над морем",
    "Кошка на диване",
    "Собака в парке",
    "Ελληνικό νησί",
    "서울의 밤",
    "قطة على الأريكة",
    "Hund im Garten",
)
BRANDS = (
    "Zorvex",
    "Kwellox",
    "Trendora",
    "Blimpr",
    "Vexxa",
    "Quorbis",
    "Plinkly",
    "Marzeno",
    "Droxa",
    "Fenwyck",
    "Ostrivo",
    "Yumbrella",
    "Glarn",
    "Pexotic",
    "Skivvo",
    "Nuvarro",
)
TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a close-up photo of the {}.",
    "an image of a {}.",
)
# Nouns that trend in the crawl month (TiC-CLIP: time periods differ); all are in NOUNS.
TRENDS = {
    1: ("snow", "winter", "blanket"),
    2: ("candle", "chocolate", "rose"),
    3: ("rain", "tulip", "kite"),
    4: ("spring", "bee", "butterfly"),
    5: ("garden", "lily", "bicycle"),
    6: ("summer", "beach", "strawberry"),
    7: ("sea", "pool", "sunflower"),
    8: ("island", "kayak", "dune"),
    9: ("school", "pencil", "notebook"),
    10: ("maple", "leaf", "mushroom"),
    11: ("forest", "oak", "cloud"),
    12: ("christmas", "candle", "snow"),
}
_PUNCT = ",.;:?!`"  # MetaCLIP spacing characters (see metaclip-facts.md section 2)
# Short captions ("red dog", "a red dog") dominate, so many texts hold only head entries for balancing to cut.
_CAPTION_CUM_WEIGHTS = list(np.cumsum([0.14, 0.14, 0.12, 0.08, 0.08, 0.06, 0.08, 0.08, 0.06, 0.08, 0.08]))


def clean_wat_text(text: str) -> str:
    """MetaCLIP's WAT cleaning: CR/LF become spaces, then strip."""
    return text.replace("\n", " ").replace("\r", " ").strip()


def clean_warc_text(text: str) -> str:
    """MetaCLIP's WARC cleaning: strip, then delete CR/LF (glues words: 'red\\napple' -> 'redapple')."""
    return text.strip().replace("\n", "").replace("\r", "")


def spaced_tokens(text: str) -> set[str]:
    """Tokens of MetaCLIP's normalised text; a one-word entry matches iff it is one of them."""
    for c in _PUNCT:
        text = text.replace(c, f" {c} ")
    for c in "\t\n\r":
        text = text.replace(c, " ")
    return set(text.split(" "))


VOCABULARY = tuple(
    sorted(
        set(CLASSES)
        | set(SYNONYMS.values())
        | set(ADJECTIVES)
        | set(NOUNS)
        | set(GERUNDS)
        | {"a", "in", "on", "at", "near", "sale", "photograph"}
    )
)


class Captions:
    """The texts of one snapshot, drawn from `rng` (shared with the page generator: one stream, fixed order).

    Zipf weights over each word list, with ranks partly shuffled per snapshot (TiC-style drift); in a dated crawl
    the month's trending nouns rank first. `class_p` is the snapshot's class mix, drawn with the drift.
    """

    def __init__(self, rng: np.random.Generator, month: int | None):
        self.rng = rng

        def zipf(words, s, top=()):
            order = list(range(len(words)))
            for _ in range(len(words) // 4):  # a quarter of the ranks swap places between time periods
                i, j = self.rng.integers(0, len(words), 2)
                order[i], order[j] = order[j], order[i]
            ranked = list(top) + [words[k] for k in order if words[k] not in top]
            w = 1.0 / (np.arange(1, len(ranked) + 1) ** s)
            return ranked, list(np.cumsum(w / w.sum()))

        self.adj = zipf(ADJECTIVES, 1.8)
        # Each crawl month has trending nouns on top of the ranking (seasons, holidays), so snapshots from
        # different months differ predictably on top of the random drift.
        self.noun = zipf(NOUNS, 1.6, TRENDS.get(month, ()) if month is not None else ())
        self.verb = zipf(GERUNDS, 1.6)
        base = np.array([1.0, 0.9, 0.8, 1.1, 1.3, 0.7, 1.4, 1.0, 0.9, 1.0]) * self.rng.lognormal(0, 0.3, len(CLASSES))
        self.class_p = base / base.sum()

    def pick(self, items, cum_weights=None):
        if cum_weights is None:
            return items[int(self.rng.integers(len(items)))]
        return items[min(bisect.bisect(cum_weights, self.rng.random()), len(items) - 1)]

    def hex(self, n: int) -> str:
        return "".join("0123456789abcdef"[int(i)] for i in self.rng.integers(0, 16, n))

    def word(self, table) -> str:
        return self.pick(*table)

    def class_caption(self, cls: str) -> str:
        w = SYNONYMS.get(cls, cls) if self.rng.random() < 0.05 else cls
        a, a2, n = self.word(self.adj), self.word(self.adj), self.word(self.noun)
        if cls in ANIMATE and self.rng.random() < 0.35:
            return self.pick(
                [
                    f"{w} {self.word(self.verb)} in the {n}",
                    f"a {a} {w} {self.word(self.verb)}",
                    f"{a} {w} {self.word(self.verb)} on the {n}",
                ]
            )
        return self.pick(
            [
                f"{a} {w}",
                f"a {a} {w}",
                f"a {a} {w} in the {n}",
                f"{a} {a2} {w}",
                f"{w} near the {n}",
                f"photograph of a {a} {w}",
                f"{w} and {n}",
                f"{n} with {a} {w}",
                w,
                f"{a} {w} for sale",
                f"{w} on the {n} at {self.word(self.noun)}",
            ],
            _CAPTION_CUM_WEIGHTS,
        )

    def noclass_caption(self) -> str:
        a, n, n2 = self.word(self.adj), self.word(self.noun), self.word(self.noun)
        return self.pick([f"{a} {n}", f"{a} {n} in the {n2}", f"{n} and {n2}", f"a {a} {n}"])

    def nomatch(self) -> str:
        r = lambda lo, hi: int(self.rng.integers(lo, hi))  # noqa: E731
        return self.pick(
            [
                lambda: f"IMG_{r(1000, 9999)}.JPG",
                lambda: f"DSC{r(0, 99999):05d}",
                lambda: f"DSC_{r(1000, 9999)}.jpg",
                lambda: f"P{r(1000000, 9999999)}.JPG",
                lambda: f"{self.hex(12)}.jpg",
                lambda: self.hex(32),
                lambda: f"image{r(1, 999):03d}",
                lambda: f"screenshot-2023-{r(1, 12):02d}-{r(1, 28):02d}-{r(100, 999)}",
                lambda: f"{self.pick(BRANDS)} XR-{r(100, 999)}",
                lambda: f"thumb_{self.hex(6)}_{r(2, 9)}00x{r(2, 9)}00",
                lambda: self.pick(FOREIGN),
                lambda: self.pick(FOREIGN),
            ]
        )()

    def messy(self, cls: str | None) -> str:
        c = self.class_caption(cls) if cls else self.noclass_caption()
        if " " not in c:
            c = f"{self.word(self.adj)} {c}"
        brand = self.pick(BRANDS)
        return self.pick(
            [
                c.upper(),
                c.capitalize() + ".",
                c.replace(" ", "\t", 1),
                c.replace(" ", "\n", 1),
                c.replace(" ", "\r\n", 1),
                f"  {c}  ",
                f"\u00a0{c}\u00a0",
                f'"{c}"',
                f"({c})",
                f"{c}!!!",
                f"{c}, {brand}",
                c.replace(" ", "-") + ".jpg",
                f"{c} \U0001f642",
                f"{c} | {brand}",
                f"{c}\n",
                f"{c}?{c}",
            ]
        )

    def text(self, cls: str | None) -> tuple[str, str]:
        u = self.rng.random()
        if u < 0.50 and cls:
            return self.class_caption(cls), "caption"
        if u < 0.56:
            return self.noclass_caption(), "caption_noclass"
        if u < 0.62:
            return self.messy(cls), "messy"
        return self.nomatch(), "nomatch"
