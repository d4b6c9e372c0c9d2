"""Generate a small, deterministic CommonCrawl-like snapshot so the whole pipeline runs offline.

The project must run on a fresh machine without network or ../shared, so the bundled sample is *generated*,
byte-for-byte reproducibly (fixed gzip headers, record ids derived from the seed, fixed dates, no set iteration in
output order). Everything follows the real formats closely enough that the production readers are exercised:

- WAT files in CommonCrawl's layout (one gzip member per record; warcinfo, then per page the three `metadata`
  records for request / response / crawl-metadata; JSON written like CC's writer, `/` and `@` unescaped),
- one WARC with real HTML `response` records (plus request / metadata records, a windows-1252 page, a `<base>`
  page and a non-HTML response),
- deliberately broken records (truncated gzip, bad JSON, invalid UTF-8, missing field, unparseable URL),
- an image WARC kept outside the crawl dir (the pool reader parses every *.warc.gz there as HTML),
- a held-out zero-shot eval split, a tiny MediaWiki export and pageview dumps for the metadata builder,
- a manifest with the exact numbers a correct reader must reproduce.

Alt texts mix Zipf-distributed captions built from WordNet words (so balancing has a head to cut) with ~40 %
texts that match no metadata entry (camera file names, hashes, non-Latin scripts), messy whitespace/punctuation
variants and planted duplicates. Images are 64x64 JPEGs drawn per visual class, so a tiny CLIP can learn them.
"""

from __future__ import annotations

import argparse
import bisect
import bz2
import gzip
import hashlib
import html
import io
import json
import re
import struct
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape as xml_escape

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 1

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


# --------------------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------------------
@dataclass
class SampleManifest:
    """What was written and what a correct reader must find. Written to root/manifests/<snapshot>.json."""

    snapshot: str
    seed: int
    generator_version: int
    crawl_dir: str  # relative to root
    wat_files: list[str]  # names relative to crawl_dir
    warc_files: list[str]
    files: list[dict]  # {path (relative to root), bytes, sha256}
    pages: dict  # generated / readable pages per format
    records: dict  # per crawl file: records written, records a reader can parse
    planted: list[dict]  # each deliberately bad record / link: reason, file, offset, page_url
    expected_skips: dict  # reason code -> count (pool skip codes)
    image_links: dict  # IMG links in readable records (wat / warc / bad_url / no_text)
    pairs_written: dict  # non-empty cleaned (url, text) occurrences, per format and total
    pairs_distinct: int  # distinct (url, text) over the whole snapshot (global dedup)
    pairs_distinct_per_file: dict  # file -> distinct pairs inside that file (upstream per-file dedup)
    pairs_by_kind: dict  # distinct pairs by generator text kind
    texts_matching_vocabulary: int  # distinct pairs whose text matches >= 1 built-in vocabulary word
    vocabulary_counts: dict  # word -> distinct pairs whose text matches it (exact for those entries)
    planted_duplicates: list[dict]
    classes: list[str]
    image_classes: dict  # resolved image URL -> class (None: decorative logo)
    images: dict  # images WARC path, counts, missing / corrupt / http_error URL lists
    eval: dict
    wikipedia: dict
    pairs_file: str  # gzipped JSONL of every distinct pair: url, text, kind, n


# --------------------------------------------------------------------------------------------------------------
# Byte-level writers
# --------------------------------------------------------------------------------------------------------------
def _gzip_member(data: bytes) -> bytes:
    # Hand-made header (mtime 0, OS 3 like real CC files) so the bytes depend only on the data.
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = comp.compress(data) + comp.flush()
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + body + struct.pack("<II", zlib.crc32(data), len(data))


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _sha1_b32(data: bytes) -> str:
    # Same result as base64.b32encode (160 bits = 32 symbols, no padding), ~5x faster: ~20k digests per run.
    n = int.from_bytes(hashlib.sha1(data).digest(), "big")
    return "sha1:" + "".join(_B32[(n >> shift) & 31] for shift in range(155, -1, -5))


def _warc_record(headers: list[tuple[str, str]], block: bytes) -> bytes:
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("utf-8") + block + b"\r\n\r\n"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(t: datetime) -> str:
    return t.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _dumps(obj) -> str:
    # CommonCrawl's writer leaves '/', '@' and non-ASCII unescaped and writes no spaces.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _headers_dict(header_block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in header_block.split("\r\n")[1:]:
        if line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _java_crc(data: bytes) -> str:
    crc = zlib.crc32(data)
    return str(crc - (1 << 32) if crc >= 1 << 31 else crc)  # Java prints the CRC as a signed int


# --------------------------------------------------------------------------------------------------------------
# Content model
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Text:
    key: str  # alt | title | data-image-title
    raw: str  # attribute value as written
    kind: str  # caption | caption_noclass | nomatch | messy | brand | empty


@dataclass
class _Img:
    ref: str  # src attribute as written
    url: str | None  # resolved URL, None when unparseable
    texts: list[_Text]
    link: str | None = None  # wrapping <a href>, if any


@dataclass
class _Site:
    host: str
    brand: str
    scheme: str
    base: str | None  # <base href> every page of the site carries
    ip: str
    images: list = field(default_factory=list)


@dataclass
class _PoolImage:
    url: str
    cls: str | None
    home: _Site | None  # None: hosted on a shared CDN
    captions: list[tuple[str, str]]


@dataclass
class _Page:
    url: str
    site: _Site
    title: str
    imgs: list[_Img]
    fetch: datetime
    charset: str = "UTF-8"
    lazy: list[_Img] = field(default_factory=list)  # <img data-src> without src: no URL, not a pair


def _reference(canonical: str, page_url: str, base: str | None, style: str) -> str:
    """The src attribute to write so that urljoin(base or page, src) gives back `canonical`."""
    parts = urlsplit(canonical)
    ref = canonical
    if style == "base" and base and canonical.startswith(base):
        ref = canonical[len(base) :]
    elif style == "root" and base is None and parts.netloc == urlsplit(page_url).netloc:
        ref = parts.path + (f"?{parts.query}" if parts.query else "")
    elif style == "proto" and urlsplit(base or page_url).scheme == parts.scheme:
        ref = canonical[len(parts.scheme) + 1 :]
    assert urljoin(base or page_url, ref) == canonical, (canonical, page_url, base, ref)
    return ref


class _Builder:
    """Builds one snapshot. Separate RNG streams keep e.g. the eval split independent of the page count."""

    def __init__(self, root: Path, snapshot: str, seed: int, n_wat_files: int, pages_per_file: int):
        if n_wat_files < 3 or pages_per_file < 16:
            raise ValueError("need n_wat_files >= 3 and pages_per_file >= 16 to plant every bad record")
        self.root, self.snapshot, self.seed = root, snapshot, seed
        self.n_wat, self.ppf = n_wat_files, pages_per_file
        ss = np.random.SeedSequence([seed, zlib.crc32(snapshot.encode())])
        content, images, evals = ss.spawn(3)
        self.rng = np.random.default_rng(content)
        self.img_rng = np.random.default_rng(images)
        self.eval_rng = np.random.default_rng(evals)
        self._id_counter = 0
        # CommonCrawl ids are YEAR-WEEK; the crawl starts on that ISO week's Monday.
        m = re.search(r"(\d{4})-(\d{1,2})$", snapshot)
        try:
            start = datetime.fromisocalendar(int(m.group(1)), int(m.group(2)), 1) if m else None
        except ValueError:
            start = None
        self.has_date = start is not None
        start = start or datetime(2024, 1, 1)
        self.t0 = start.replace(tzinfo=UTC) + timedelta(hours=2, minutes=31, seconds=22)
        seg = f"{self.t0:%Y%m%d%H%M%S}-{self.t0 + timedelta(hours=3):%Y%m%d%H%M%S}"
        self.prefix = f"CC-MAIN-{seg}"
        self.crawl_dir = root / "crawl" / snapshot
        self.image_classes: dict[str, str | None] = {}
        self.pairs: dict[tuple[str, str], dict] = {}  # (url, text) -> {kind, n}
        self.per_file: dict[str, set] = {}
        self.written = {"wat": 0, "warc": 0}
        self.links = {"wat": 0, "warc": 0, "bad_url": 0, "no_text": 0, "without_src": 0}
        self.planted: list[dict] = []
        self.planted_dups: list[dict] = []
        self._wat_stats: dict[str, dict] = {}
        self._warc_stats: dict[str, dict] = {}
        self._cdn: list[_PoolImage] = []
        self._drift_vocabulary()

    # -- randomness helpers ------------------------------------------------------------------------------------
    def _record_id(self) -> str:
        self._id_counter += 1
        digest = hashlib.blake2b(f"{self.seed}/{self.snapshot}/{self._id_counter}".encode(), digest_size=16).digest()
        return f"<urn:uuid:{uuid.UUID(bytes=digest, version=4)}>"

    def _pick(self, items, cum_weights=None):
        if cum_weights is None:
            return items[int(self.rng.integers(len(items)))]
        return items[min(bisect.bisect(cum_weights, self.rng.random()), len(items) - 1)]

    def _hex(self, n: int) -> str:
        return "".join("0123456789abcdef"[int(i)] for i in self.rng.integers(0, 16, n))

    def _drift_vocabulary(self):
        """Zipf weights over each word list, with ranks partly shuffled per snapshot (TiC-style drift)."""

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
        self.noun = zipf(NOUNS, 1.6, TRENDS.get(self.t0.month, ()) if self.has_date else ())
        self.verb = zipf(GERUNDS, 1.6)
        base = np.array([1.0, 0.9, 0.8, 1.1, 1.3, 0.7, 1.4, 1.0, 0.9, 1.0]) * self.rng.lognormal(0, 0.3, len(CLASSES))
        self.class_p = base / base.sum()

    # -- texts -------------------------------------------------------------------------------------------------
    def _word(self, table) -> str:
        return self._pick(*table)

    def _class_caption(self, cls: str) -> str:
        w = SYNONYMS.get(cls, cls) if self.rng.random() < 0.05 else cls
        a, a2, n = self._word(self.adj), self._word(self.adj), self._word(self.noun)
        if cls in ANIMATE and self.rng.random() < 0.35:
            return self._pick(
                [
                    f"{w} {self._word(self.verb)} in the {n}",
                    f"a {a} {w} {self._word(self.verb)}",
                    f"{a} {w} {self._word(self.verb)} on the {n}",
                ]
            )
        return self._pick(
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
                f"{w} on the {n} at {self._word(self.noun)}",
            ],
            _CAPTION_CUM_WEIGHTS,
        )

    def _noclass_caption(self) -> str:
        a, n, n2 = self._word(self.adj), self._word(self.noun), self._word(self.noun)
        return self._pick([f"{a} {n}", f"{a} {n} in the {n2}", f"{n} and {n2}", f"a {a} {n}"])

    def _nomatch(self) -> str:
        r = lambda lo, hi: int(self.rng.integers(lo, hi))  # noqa: E731
        return self._pick(
            [
                lambda: f"IMG_{r(1000, 9999)}.JPG",
                lambda: f"DSC{r(0, 99999):05d}",
                lambda: f"DSC_{r(1000, 9999)}.jpg",
                lambda: f"P{r(1000000, 9999999)}.JPG",
                lambda: f"{self._hex(12)}.jpg",
                lambda: self._hex(32),
                lambda: f"image{r(1, 999):03d}",
                lambda: f"screenshot-2023-{r(1, 12):02d}-{r(1, 28):02d}-{r(100, 999)}",
                lambda: f"{self._pick(BRANDS)} XR-{r(100, 999)}",
                lambda: f"thumb_{self._hex(6)}_{r(2, 9)}00x{r(2, 9)}00",
                lambda: self._pick(FOREIGN),
                lambda: self._pick(FOREIGN),
            ]
        )()

    def _messy(self, cls: str | None) -> str:
        c = self._class_caption(cls) if cls else self._noclass_caption()
        if " " not in c:
            c = f"{self._word(self.adj)} {c}"
        brand = self._pick(BRANDS)
        return self._pick(
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

    def _text(self, cls: str | None) -> tuple[str, str]:
        u = self.rng.random()
        if u < 0.50 and cls:
            return self._class_caption(cls), "caption"
        if u < 0.56:
            return self._noclass_caption(), "caption_noclass"
        if u < 0.62:
            return self._messy(cls), "messy"
        return self._nomatch(), "nomatch"

    # -- sites, image pool, pages ------------------------------------------------------------------------------
    def _make_sites(self, n_sites: int) -> list[_Site]:
        sites = []
        tlds = (".com", ".net", ".org", ".co.uk", ".de", ".io")
        for i in range(n_sites):
            brand = BRANDS[i % len(BRANDS)] + (str(i // len(BRANDS)) if i >= len(BRANDS) else "")
            host = f"www.{brand.lower()}{tlds[i % len(tlds)]}"
            scheme = "http" if i % 11 == 5 else "https"  # a few legacy http sites (absolute srcs only)
            base = f"https://static.{brand.lower()}{tlds[i % len(tlds)]}/assets/" if i % 9 == 4 else None
            ip = ".".join(str(int(x)) for x in self.rng.integers(1, 255, 4))
            sites.append(_Site(host, brand, scheme, base, ip))
        return sites

    def _make_pool(self, sites: list[_Site], n_images: int) -> list[_PoolImage]:
        pool = []
        for i in range(n_images):
            cls = CLASSES[int(self.rng.choice(len(CLASSES), p=self.class_p))]
            site = sites[int(self.rng.integers(len(sites)))] if self.rng.random() < 0.7 else None
            stem = self._pick([f"IMG_{1000 + i}", f"{cls}-{self._hex(6)}", self._hex(16), f"DSC{i:05d}"])
            if site is None:
                url = f"https://cdn.imgix-sample.net/i/{self._hex(2)}/{stem}.jpg?w=640&q=80"
            elif site.base:
                url = f"{site.base}img/{stem}.jpg"
            else:
                url = f"{site.scheme}://{site.host}/wp-content/uploads/2024/{1 + i % 12:02d}/{stem}.jpg"
            captions = [self._text(cls) for _ in range(int(self.rng.integers(1, 3)))]
            img = _PoolImage(url, cls, site, captions)
            if site:
                site.images.append(img)
            pool.append(img)
            self.image_classes[url] = cls
        return pool

    def _img(self, page_url: str, site: _Site, pimg: _PoolImage) -> _Img:
        if site.base and pimg.home is site:
            style = "base"
        else:
            style = self._pick(["abs", "root", "proto"], [0.4, 0.8, 1.0])
        ref = _reference(pimg.url, page_url, site.base, style)
        texts: list[_Text] = []
        u = self.rng.random()
        if u < 0.05:
            pass  # no alt attribute at all
        elif u < 0.10:
            texts.append(_Text("alt", self._pick(["", " ", "\n"]), "empty"))
        elif u < 0.80:
            raw, kind = pimg.captions[int(self.rng.integers(len(pimg.captions)))]
            texts.append(_Text("alt", raw, kind))
        else:
            raw, kind = self._text(pimg.cls)
            texts.append(_Text("alt", raw, kind))
        if self.rng.random() < 0.12:
            same = texts and self.rng.random() < 0.5
            texts.append(_Text("title", *((texts[0].raw, texts[0].kind) if same else self._text(pimg.cls))))
        if self.rng.random() < 0.05:
            texts.append(_Text("data-image-title", *self._text(pimg.cls)))
        return _Img(ref, pimg.url, texts)

    def _logo(self, page_url: str, site: _Site) -> _Img:
        url = (site.base + "logo.jpg") if site.base else f"{site.scheme}://{site.host}/static/logo.jpg"
        self.image_classes[url] = None
        ref = _reference(url, page_url, site.base, "base" if site.base else "root")
        u = self.rng.random()
        texts = [_Text("alt", site.brand, "brand")] if u < 0.6 else [_Text("alt", "", "empty")] if u < 0.85 else []
        return _Img(ref, url, texts, link="/")

    def _page(self, site: _Site, pool: list[_PoolImage], k: int, when: datetime) -> _Page:
        slug = self._hex(6)
        section = self._pick(["blog", "news", "gallery", "shop/item", "p"])
        page_url = f"{site.scheme}://{site.host}/{section}/{slug}-{k}.html"
        if self.rng.random() < 0.1:
            page_url += f"?ref={self._hex(4)}"
        imgs = [self._logo(page_url, site)]
        for _ in range(int(self.rng.integers(1, 5))):
            own = site.images if site.images and self.rng.random() < 0.7 else None
            pimg = own[int(self.rng.integers(len(own)))] if own else self._cdn_pick(pool)
            imgs.append(self._img(page_url, site, pimg))
        first = next((t.raw for i in imgs[1:] for t in i.texts if t.kind == "caption"), site.brand)
        title = f"{clean_wat_text(first).capitalize()} | {site.brand}"
        return _Page(page_url, site, title, imgs, when)

    def _cdn_pick(self, pool: list[_PoolImage]) -> _PoolImage:
        cdn = self._cdn
        return cdn[int(self.rng.integers(len(cdn)))] if cdn else pool[int(self.rng.integers(len(pool)))]

    # -- HTML and HTTP rendering -------------------------------------------------------------------------------
    @staticmethod
    def _attrs(img: _Img, src_attr: str = "src") -> str:
        out = f' {src_attr}="{html.escape(img.ref)}"'
        for t in img.texts:
            out += f' {t.key}="{html.escape(t.raw)}"'
        return out

    def _html(self, page: _Page) -> str:
        site = page.site
        base = f'<base href="{site.base}">\n' if site.base else ""
        body = []
        for img in page.imgs[1:]:
            tag = f'<img{self._attrs(img)} loading="lazy" width="640" height="480">'
            body.append(f"<figure>{tag}</figure>" if img.link is None else f'<a href="{img.link}">{tag}</a>')
        for img in page.lazy:
            body.append(f'<img{self._attrs(img, "data-src")} class="lazyload">')
        return (
            f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="{page.charset.lower()}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(page.title)}</title>\n{base}"
            f'<meta property="og:title" content="{html.escape(page.title)}">\n'
            f'<link rel="stylesheet" href="/static/css/site.css">\n</head>\n<body>\n'
            f'<header><a href="/"><img{self._attrs(page.imgs[0])}></a>\n'
            f'<nav><a href="/">Home</a> <a href="/gallery/">Gallery</a> <a href="/about">About us</a></nav>'
            f"</header>\n<main>\n<h1>{html.escape(page.title)}</h1>\n"
            + "\n".join(body)
            + '\n<p>Posted in <a href="/blog/">Blog</a>.</p>\n</main>\n'
            '<footer><a href="/contact" rel="nofollow">Contact</a></footer>\n</body>\n</html>\n'
        )

    def _wat_links(self, page: _Page) -> list[dict]:
        """HTML-Metadata Links in document order, as ia-web-commons records them (raw, unresolved URLs)."""

        def img_link(img):
            d = {"path": "IMG@/src", "url": img.ref}
            d.update({t.key: t.raw for t in img.texts})
            return d

        links = [
            {"path": "A@/href", "url": "/"},
            img_link(page.imgs[0]),
            {"path": "A@/href", "url": "/", "text": "Home"},
            {"path": "A@/href", "url": "/gallery/", "text": "Gallery"},
            {"path": "A@/href", "url": "/about", "text": "About us"},
        ]
        for img in page.imgs[1:]:
            if img.link is not None:
                links.append({"path": "A@/href", "url": img.link})
            links.append(img_link(img))
        links += [
            {"path": "A@/href", "url": "/blog/", "text": "Blog"},
            {"path": "A@/href", "url": "/contact", "rel": "nofollow", "text": "Contact"},
        ]
        return links

    def _http_response(self, page: _Page, body: bytes, ctype: str | None = None) -> tuple[str, bytes]:
        ctype = ctype or f"text/html; charset={page.charset}"
        head = (
            f"HTTP/1.1 200 OK\r\nDate: {_http_date(page.fetch)}\r\nServer: nginx\r\n"
            f"Content-Type: {ctype}\r\nVary: Accept-Encoding\r\n"
            f"Last-Modified: {_http_date(page.fetch - timedelta(days=17))}\r\n"
            f"X-Crawler-Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head, head.encode("latin-1") + body

    def _http_request(self, page: _Page) -> bytes:
        p = urlsplit(page.url)
        path = p.path + (f"?{p.query}" if p.query else "")
        return (
            f"GET {path} HTTP/1.1\r\nUser-Agent: CCBot/2.0 (https://commoncrawl.org/faq/)\r\n"
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
            "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: br,gzip\r\n"
            f"Host: {p.netloc}\r\nConnection: Keep-Alive\r\n\r\n"
        ).encode()

    def _crawl_meta(self, page: _Page) -> bytes:
        lang = (
            # %-formatting: the JSON's own braces would need doubling in an f-string
            '{"reliable":true,"text-bytes":%d,"languages":[{"code":"en","code-iso-639-3":"eng",'  # noqa: UP031
            '"text-covered":0.97,"score":812.0,"name":"ENGLISH"}]}' % (400 + len(page.title))
        )
        return (
            f"fetchTimeMs: {100 + len(page.url) * 7}\r\ncharset-detected: {page.charset}\r\nlanguages-cld2: {lang}\r\n"
        ).encode()

    def _warc_triplet(self, page: _Page, warcinfo_id: str, body: bytes, ctype: str | None = None):
        """The request / response / metadata WARC records CommonCrawl stores for one capture."""
        req_id, resp_id, meta_id = self._record_id(), self._record_id(), self._record_id()
        when = _iso(page.fetch)
        req = self._http_request(page)
        head, resp = self._http_response(page, body, ctype)
        meta = self._crawl_meta(page)
        ptype = (ctype or "text/html").split(";")[0]
        records = [
            (
                "request",
                req_id,
                req,
                [
                    ("WARC-Type", "request"),
                    ("WARC-Date", when),
                    ("WARC-Record-ID", req_id),
                    ("Content-Length", str(len(req))),
                    ("Content-Type", "application/http; msgtype=request"),
                    ("WARC-Warcinfo-ID", warcinfo_id),
                    ("WARC-IP-Address", page.site.ip),
                    ("WARC-Target-URI", page.url),
                    ("WARC-Payload-Digest", _sha1_b32(b"")),
                    ("WARC-Block-Digest", _sha1_b32(req)),
                ],
            ),
            (
                "response",
                resp_id,
                resp,
                [
                    ("WARC-Type", "response"),
                    ("WARC-Date", when),
                    ("WARC-Record-ID", resp_id),
                    ("Content-Length", str(len(resp))),
                    ("Content-Type", "application/http; msgtype=response"),
                    ("WARC-Warcinfo-ID", warcinfo_id),
                    ("WARC-Concurrent-To", req_id),
                    ("WARC-IP-Address", page.site.ip),
                    ("WARC-Target-URI", page.url),
                    ("WARC-Payload-Digest", _sha1_b32(body)),
                    ("WARC-Block-Digest", _sha1_b32(resp)),
                    ("WARC-Identified-Payload-Type", ptype),
                ],
            ),
            (
                "metadata",
                meta_id,
                meta,
                [
                    ("WARC-Type", "metadata"),
                    ("WARC-Date", when),
                    ("WARC-Record-ID", meta_id),
                    ("Content-Length", str(len(meta))),
                    ("Content-Type", "application/warc-fields"),
                    ("WARC-Warcinfo-ID", warcinfo_id),
                    ("WARC-Concurrent-To", resp_id),
                    ("WARC-Target-URI", page.url),
                    ("WARC-Payload-Digest", _sha1_b32(meta)),
                    ("WARC-Block-Digest", _sha1_b32(meta)),
                ],
            ),
        ]
        return records, head

    def _warcinfo(self, filename: str, when: datetime, fields: list[tuple[str, str]], wat: bool) -> tuple[str, bytes]:
        rid = self._record_id()
        block = ("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode()
        if wat:
            hdr = [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", _iso(when)),
                ("WARC-Filename", filename),
                ("WARC-Record-ID", rid),
                ("Content-Type", "application/warc-fields"),
                ("Content-Length", str(len(block))),
                ("WARC-Block-Digest", _sha1_b32(block)),
            ]
        else:
            hdr = [
                ("WARC-Type", "warcinfo"),
                ("WARC-Date", _iso(when)),
                ("WARC-Record-ID", rid),
                ("Content-Length", str(len(block))),
                ("Content-Type", "application/warc-fields"),
                ("WARC-Filename", filename),
                ("WARC-Block-Digest", _sha1_b32(block)),
            ]
        return rid, _gzip_member(_warc_record(hdr, block))

    def _crawl_warcinfo(self, filename: str) -> tuple[str, bytes]:
        return self._warcinfo(
            filename,
            self.t0,
            [
                ("isPartOf", self.snapshot),
                ("publisher", "Common Crawl"),
                ("description", f"Synthetic sample crawl {self.snapshot} (metaclip-assets)"),
                ("operator", "metaclip-assets sample generator"),
                ("hostname", "ip-10-0-0-1"),
                ("software", "Apache Nutch 1.19 (modified, https://github.com/commoncrawl/nutch/)"),
                ("format", "WARC File Format 1.1"),
                ("conformsTo", "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/"),
            ],
            False,
        )

    # -- WAT ---------------------------------------------------------------------------------------------------
    def _wat_payloads(self, page: _Page, warc_name: str, offset: int, warcinfo_id: str):
        """Three WAT JSON payloads describing the page's (virtual) WARC records, with true lengths/digests."""
        body = self._html(page).encode(page.charset)
        records, http_head = self._warc_triplet(page, warcinfo_id, body)
        out = []
        for kind, rid, block, hdr in records:
            warc_bytes = _warc_record(hdr, block)
            member = _gzip_member(warc_bytes)
            header_len = len(warc_bytes) - len(block) - 4
            container = {
                "Filename": warc_name,
                "Compressed": True,
                "Offset": str(offset),
                "Gzip-Metadata": {
                    "Deflate-Length": str(len(member) - 18),
                    "Header-Length": "10",
                    "Footer-Length": "8",
                    "Inflated-CRC": _java_crc(warc_bytes),
                    "Inflated-Length": str(len(warc_bytes)),
                },
            }
            offset += len(member)
            whm = {k: v for k, v in hdr if k not in ("WARC-Payload-Digest", "WARC-Block-Digest")}
            if kind == "request":
                hb = block.decode()
                pm = {
                    "Actual-Content-Type": "application/http; msgtype=request",
                    "HTTP-Request-Metadata": {
                        "Request-Message": dict(zip(("Method", "Path", "Version"), hb.split("\r\n")[0].split(" "))),
                        "Headers-Length": str(len(hb)),
                        "Headers": _headers_dict(hb),
                        "Entity-Length": "0",
                        "Entity-Digest": _sha1_b32(b""),
                        "Entity-Trailing-Slop-Length": "0",
                    },
                }
            elif kind == "response":
                head = {"Title": page.title}
                if page.site.base:
                    head["Base"] = page.site.base
                head["Metas"] = [
                    {"name": "viewport", "content": "width=device-width, initial-scale=1"},
                    {"property": "og:title", "content": page.title},
                ]
                head["Link"] = [{"path": "LINK@/href", "url": "/static/css/site.css", "rel": "stylesheet"}]
                pm = {
                    "Actual-Content-Type": "application/http; msgtype=response",
                    "HTTP-Response-Metadata": {
                        "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                        "Headers-Length": str(len(http_head)),
                        "Headers": _headers_dict(http_head),
                        "HTML-Metadata": {"Head": head, "Links": self._wat_links(page)},
                        "Entity-Length": str(len(body)),
                        "Entity-Digest": _sha1_b32(body),
                        "Entity-Trailing-Slop-Length": "0",
                    },
                }
            else:
                pm = {
                    "Actual-Content-Type": "application/metadata-fields",
                    "WARC-Metadata-Metadata": {
                        "Metadata-Records": [
                            {"Name": k, "Value": v.strip()}
                            for k, _, v in (line.partition(":") for line in block.decode().split("\r\n") if line)
                        ]
                    },
                }
            pm.update(
                {
                    "Actual-Content-Length": str(len(block)),
                    "Trailing-Slop-Length": "0" if kind == "metadata" else "4",
                    "Block-Digest": _sha1_b32(block),
                }
            )
            envelope = {
                "Payload-Metadata": pm,
                "Format": "WARC/1.0",
                "WARC-Header-Length": str(header_len),
                "WARC-Header-Metadata": whm,
            }
            out.append((kind, rid, {"Container": container, "Envelope": envelope}))
        return out, offset

    def _wat_record(self, page: _Page, refers_to: str, when: datetime, payload: bytes) -> bytes:
        rid = self._record_id()
        hdr = [
            ("WARC-Type", "metadata"),
            ("WARC-Target-URI", page.url),
            ("WARC-Date", _iso(when)),
            ("WARC-Record-ID", rid),
            ("WARC-Refers-To", refers_to),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("WARC-Payload-Digest", _sha1_b32(payload)),
            ("WARC-Block-Digest", _sha1_b32(payload)),
        ]
        return _gzip_member(_warc_record(hdr, payload))

    def _write_wat(self, idx: int, pages: list[_Page], faults: dict[int, str], cut_page: int | None) -> str:
        name = f"{self.prefix}-{idx:05d}.warc.wat.gz"
        warc_name = f"{self.prefix}-{idx:05d}.warc.gz"
        extracted = self.t0 + timedelta(days=13, hours=idx)
        _, info = self._warcinfo(
            name,
            extracted,
            [
                ("Software-Info", "ia-web-commons.1.1.10-SNAPSHOT-20240513074037"),
                ("Extracted-Date", _http_date(extracted)),
                ("ip", "10.67.67.159"),
                ("hostname", "ip-10-67-67-159.ec2.internal"),
                ("format", "WARC File Format 1.0"),
                ("conformsTo", "http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf"),
            ],
            True,
        )
        chunks, pos, offset = [info], len(info), 0
        warcinfo_id = self._record_id()
        n_records = 1
        for k, page in enumerate(pages):
            payloads, offset = self._wat_payloads(page, warc_name, offset, warcinfo_id)
            for kind, refers, obj in payloads:
                fault = faults.get(k) if kind == "response" else None
                if fault == "missing_field":
                    del obj["Envelope"]["Payload-Metadata"]
                data = _dumps(obj).encode("utf-8")
                if fault == "bad_json":
                    data = data[: len(data) * 2 // 3]  # a writer that died mid-record
                elif fault == "bad_encoding":  # latin-1 bytes leaking into the UTF-8 JSON
                    data = data.replace(b'"Title":"', b'"Title":"\xe9t\xe9 ', 1)
                member = self._wat_record(page, refers, extracted + timedelta(seconds=k), data)
                if kind == "response" and k == cut_page:
                    cut = pos + len(member) // 2
                    self.planted.append(
                        {
                            "reason": "truncated_gzip",
                            "file": name,
                            "offset": pos,
                            "cut_at": cut,
                            "page_url": page.url,
                            "records_before_cut": n_records,
                        }
                    )
                    chunks.append(member[: len(member) // 2])
                    self._wat_stats[name] = {"records_written": n_records + 1, "records_readable": n_records}
                    return self._finish_file(name, chunks)
                if fault:
                    self.planted.append({"reason": fault, "file": name, "offset": pos, "page_url": page.url})
                chunks.append(member)
                pos += len(member)
                n_records += 1
                if kind == "response" and not fault:
                    self._collect(page, name, "wat")
                    self.planted += [
                        {
                            "reason": "bad_url",
                            "file": name,
                            "offset": pos - len(member),
                            "page_url": page.url,
                            "url": img.ref,
                        }
                        for img in page.imgs
                        if img.url is None
                    ]
        self._wat_stats[name] = {"records_written": n_records, "records_readable": n_records}
        return self._finish_file(name, chunks)

    def _finish_file(self, name: str, chunks: list[bytes]) -> str:
        (self.crawl_dir / name).write_bytes(b"".join(chunks))
        return name

    # -- expected pairs ----------------------------------------------------------------------------------------
    def _collect(self, page: _Page, file: str, fmt: str):
        clean = clean_wat_text if fmt == "wat" else clean_warc_text
        seen = self.per_file.setdefault(file, set())
        for img in page.imgs:
            self.links[fmt] += 1
            if img.url is None:
                self.links["bad_url"] += 1
                continue
            texts = [(clean(t.raw), t.kind) for t in img.texts]
            texts = [(t, kind) for t, kind in texts if t]
            if not texts:
                self.links["no_text"] += 1
            for text, kind in texts:
                self.written[fmt] += 1
                entry = self.pairs.setdefault((img.url, text), {"kind": kind, "n": 0})
                entry["n"] += 1
                seen.add((img.url, text))
        self.links["without_src"] += len(page.lazy)

    # -- the HTML WARC -----------------------------------------------------------------------------------------
    def _special_warc_pages(self, sites: list[_Site], pool: list[_PoolImage], wat_pair: tuple[str, str]):
        """Hand-made edge cases for the WARC reader (whitespace, entities, charset, <base>, duplicates)."""
        when = self.t0 + timedelta(hours=2, minutes=50)
        https_site = next(s for s in sites if s.base is None and s.scheme == "https")
        base_site = next(s for s in sites if s.base)
        imgs = [p for p in pool if p.home is https_site] or pool
        pages: list[_Page] = []

        def mk(site, slug, title, texts_per_img, charset="UTF-8", k=0):
            """A page whose j-th image gets texts_per_img[j]; '{cls}' becomes that image's class word."""
            url = f"{site.scheme}://{site.host}/{slug}"
            img_list = [self._logo(url, site)]
            for j, texts in enumerate(texts_per_img):
                candidates = [p for p in pool if p.home is site] or imgs
                pimg = candidates[(k + j) % len(candidates)]
                style = "base" if site.base and pimg.home is site else ("root", "proto", "abs")[j % 3]
                img_list.append(
                    _Img(
                        _reference(pimg.url, url, site.base, style),
                        pimg.url,
                        [_Text(key, raw.format(cls=pimg.cls), kind) for key, raw, kind in texts],
                    )
                )
            pages.append(_Page(url, site, title, img_list, when + timedelta(seconds=len(pages) * 3), charset))
            return pages[-1]

        p = mk(
            https_site,
            "gallery/edge-whitespace.html",
            "Whitespace and entities",
            [
                [("alt", "red\n{cls}", "messy")],  # WARC glues: 'red<cls>'; WAT would space it
                [("alt", "  {cls} on a\r\nbench  ", "messy"), ("title", "{cls}\ton the grass", "messy")],
                [("alt", 'Fish & chips <served> "hot"', "caption_noclass")],
                [("alt", "small {cls}", "caption"), ("data-image-title", "DSC_0042.jpg", "nomatch")],
                [("alt", "", "empty"), ("title", " ", "empty")],
            ],
            k=1,
        )
        p.imgs.append(p.imgs[4])  # same <img> twice on one page
        p = mk(
            https_site,
            "gallery/utf8.html",
            "Non-Latin captions",
            [
                [("alt", "東京の夜景", "nomatch")],
                [("alt", "Кошка на диване", "nomatch")],
                [("alt", "\u00a0happy {cls}\u00a0", "messy")],
            ],
            k=4,
        )
        p.lazy.append(_Img(imgs[0].url, None, [_Text("alt", f"lazy {imgs[0].cls}", "caption")]))
        mk(
            base_site,
            "blog/base-href.html",
            "Relative images under a base href",
            [[("alt", "old {cls} near the river", "caption")], [("alt", "wooden {cls}", "caption")]],
            k=2,
        )
        mk(
            https_site,
            "fr/cafe.html",
            "Café crème",
            [
                [("alt", "Café crème and a {cls} on a wooden table", "caption")],
                [("alt", "Grandma’s {cls} – «fait maison»", "messy"), ("title", "Crème brûlée", "nomatch")],
            ],
            charset="windows-1252",
            k=7,
        )
        # The same (url, alt) as a WAT record: dedup must work across formats.
        p = mk(https_site, "gallery/also-in-wat.html", "Seen before", [], k=0)
        p.imgs.append(_Img(wat_pair[0], wat_pair[0], [_Text("alt", wat_pair[1], "caption")]))
        return pages

    def _write_warc(self, pages: list[_Page]) -> str:
        name = f"{self.prefix}-{self.n_wat:05d}.warc.gz"
        info_id, info = self._crawl_warcinfo(name)
        chunks = [info]
        n = 1
        for page in pages:
            body = self._html(page).encode(page.charset)
            records, _ = self._warc_triplet(page, info_id, body)
            for _, _, block, hdr in records:
                chunks.append(_gzip_member(_warc_record(hdr, block)))
                n += 1
            self._collect(page, name, "warc")
        # A PDF capture: a response record the HTML reader must skip (not_html).
        pdf_site = pages[0].site
        pdf = _Page(f"https://{pdf_site.host}/files/brochure.pdf", pdf_site, "", [], self.t0 + timedelta(hours=3))
        body = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        records, _ = self._warc_triplet(pdf, info_id, body, "application/pdf")
        pos = sum(len(c) for c in chunks)
        for kind, _, block, hdr in records:
            if kind == "response":
                self.planted.append({"reason": "not_html", "file": name, "offset": pos, "page_url": pdf.url})
            member = _gzip_member(_warc_record(hdr, block))
            chunks.append(member)
            pos += len(member)
            n += 1
        self._warc_stats[name] = {"records_written": n, "records_readable": n}
        return self._finish_file(name, chunks)

    # -- images ------------------------------------------------------------------------------------------------
    def _write_images(self) -> dict:
        """Image WARC for ~90% of referenced URLs; the rest missing, one corrupt, one HTTP 404."""
        rng = self.img_rng
        urls = list(self.image_classes)  # insertion order = generation order (deterministic)
        present = rng.random(len(urls)) >= 0.1
        out_dir = self.root / "images" / self.snapshot
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "images.warc.gz"
        info_id, info = self._warcinfo(
            name,
            self.t0 + timedelta(days=20),
            [
                ("isPartOf", f"{self.snapshot}-images"),
                ("software", "metaclip-assets sample generator"),
                ("format", "WARC File Format 1.1"),
            ],
            False,
        )
        chunks = [info]
        missing, corrupt, http_error = [], [], []
        when = self.t0 + timedelta(days=20)
        for i, url in enumerate(urls):
            if not present[i]:
                missing.append(url)
                continue
            cls = self.image_classes[url]
            data = _jpeg(draw_image(cls, rng))
            status, ctype = "200 OK", "image/jpeg"
            if len(corrupt) == 0 and i > len(urls) // 2 and cls:
                data = data[: len(data) // 3]  # a truncated download
                corrupt.append(url)
            elif len(http_error) == 0 and i > len(urls) // 3 and cls:
                data, status, ctype = b"<html><body>Not Found</body></html>", "404 Not Found", "text/html"
                http_error.append(url)
            head = (
                f"HTTP/1.1 {status}\r\nDate: {_http_date(when)}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nCache-Control: max-age=31536000\r\n"
                f'ETag: "{hashlib.md5(data).hexdigest()[:16]}"\r\n\r\n'
            ).encode()
            block = head + data
            rid = self._record_id()
            hdr = [
                ("WARC-Type", "response"),
                ("WARC-Date", _iso(when + timedelta(seconds=i))),
                ("WARC-Record-ID", rid),
                ("Content-Length", str(len(block))),
                ("Content-Type", "application/http; msgtype=response"),
                ("WARC-Warcinfo-ID", info_id),
                ("WARC-Target-URI", url),
                ("WARC-Payload-Digest", _sha1_b32(data)),
                ("WARC-Block-Digest", _sha1_b32(block)),
                ("WARC-Identified-Payload-Type", ctype),
            ]
            chunks.append(_gzip_member(_warc_record(hdr, block)))
        (out_dir / name).write_bytes(b"".join(chunks))
        return {
            "path": f"images/{self.snapshot}/{name}",
            "referenced": len(urls),
            "records": len(urls) - len(missing),
            "missing": missing,
            "corrupt": corrupt,
            "http_error": http_error,
        }

    def _write_eval(self, per_class: int) -> dict:
        out = self.root / "eval" / self.snapshot
        for cls in CLASSES:
            (out / cls).mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                (out / cls / f"{self.snapshot}-{cls}-{k:04d}.jpg").write_bytes(_jpeg(draw_image(cls, self.eval_rng)))
        (out / "classnames.json").write_text(json.dumps(list(CLASSES), indent=1) + "\n")
        (out / "templates.json").write_text(json.dumps(list(TEMPLATES), indent=1) + "\n")
        return {
            "path": f"eval/{self.snapshot}",
            "per_class": per_class,
            "classes": list(CLASSES),
            "templates": list(TEMPLATES),
        }

    # -- driver ------------------------------------------------------------------------------------------------
    def build(self) -> SampleManifest:
        self.crawl_dir.mkdir(parents=True, exist_ok=True)
        for old in self.crawl_dir.glob("*.gz"):  # regenerating must not leave files of a larger run behind
            old.unlink()
        n_pages = self.n_wat * self.ppf
        sites = self._make_sites(max(12, n_pages // 30))
        pool = self._make_pool(sites, max(60, n_pages // 2))
        self._cdn = [p for p in pool if p.home is None]
        # Pages are grouped by file in crawl order; sites are Zipf-popular, like real crawls.
        site_p = 1.0 / np.arange(1, len(sites) + 1) ** 0.7
        site_p /= site_p.sum()
        files: list[list[_Page]] = []
        for f in range(self.n_wat):
            pages = []
            for k in range(self.ppf):
                site = sites[int(self.rng.choice(len(sites), p=site_p))]
                pages.append(
                    self._page(site, pool, f * self.ppf + k, self.t0 + timedelta(seconds=37 * (f * self.ppf + k)))
                )
            files.append(pages)
        self._plant_duplicates(files)
        # urljoin raises "Invalid IPv6 URL" on this src; the page's other links stay good.
        files[0][3].imgs.append(_Img("http://[::1/images/dog.jpg", None, [_Text("alt", "dog on the beach", "caption")]))
        faults = {0: {7: "bad_json"}, 1: {9: "bad_encoding"}, 2: {11: "missing_field"}}
        cut_page = max(12, self.ppf * 3 // 4)
        wat_names = [
            self._write_wat(f, files[f], faults.get(f, {}), cut_page if f == self.n_wat - 1 else None)
            for f in range(self.n_wat)
        ]
        dup_url, dup_text = self.planted_dups[0]["url"], self.planted_dups[0]["text"]
        warc_pages = self._special_warc_pages(sites, pool, (dup_url, dup_text))
        warc_pages += [
            self._page(
                sites[int(self.rng.integers(len(sites)))],
                pool,
                100000 + i,
                self.t0 + timedelta(hours=3, seconds=41 * i),
            )
            for i in range(20)
        ]
        warc_name = self._write_warc(warc_pages)
        images = self._write_images()
        evals = self._write_eval(20)
        wiki = write_wikipedia(self.root)
        return self._manifest(wat_names, warc_name, warc_pages, cut_page, images, evals, wiki)

    def _plant_duplicates(self, files: list[list[_Page]]):
        """Copy one captioned image link into another page of the same file and into the next file."""
        for k in range(12, self.ppf - 1):  # clear of the pages that get bad records
            img = next((i for i in files[0][k].imgs[1:] if i.texts and i.texts[0].kind == "caption"), None)
            if img is not None:
                break
        else:
            raise RuntimeError("no captioned image to duplicate")  # cannot happen with >= 16 pages per file
        alt = img.texts[0]
        for f, j in ((0, k + 1), (1, 5)):
            page = files[f][j]
            page.imgs.append(
                _Img(_reference(img.url, page.url, page.site.base, "abs"), img.url, [_Text("alt", alt.raw, alt.kind)])
            )
        self.planted_dups.append(
            {
                "url": img.url,
                "text": clean_wat_text(alt.raw),
                "pages": [
                    {"file": f"{self.prefix}-{f:05d}.warc.wat.gz", "page_url": files[f][j].url}
                    for f, j in ((0, k), (0, k + 1), (1, 5))
                ],
            }
        )

    def _manifest(self, wat_names, warc_name, warc_pages, cut_page, images, evals, wiki) -> SampleManifest:
        root = self.root
        pairs_path = root / "manifests" / f"{self.snapshot}.pairs.jsonl.gz"
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
        rows = sorted(self.pairs.items())
        lines = "".join(_dumps({"url": u, "text": t, "kind": v["kind"], "n": v["n"]}) + "\n" for (u, t), v in rows)
        pairs_path.write_bytes(gzip.compress(lines.encode(), mtime=0))
        vocab = set(VOCABULARY)
        counts: dict[str, int] = {}
        matching = 0
        by_kind: dict[str, int] = {}
        for (_, text), v in rows:
            hits = spaced_tokens(text) & vocab
            matching += bool(hits)
            for w in hits:
                counts[w] = counts.get(w, 0) + 1
            by_kind[v["kind"]] = by_kind.get(v["kind"], 0) + 1
        n_bad = sum(1 for p in self.planted if p["reason"] in ("bad_json", "bad_encoding", "missing_field"))
        wat_pages = self.n_wat * self.ppf
        readable = wat_pages - (self.ppf - cut_page) - n_bad
        skips: dict[str, int] = {}
        for p in self.planted:
            if p["reason"] == "not_html":  # a PDF capture is not a broken record: readers count it, not skip it
                continue
            skips[p["reason"]] = skips.get(p["reason"], 0) + 1
        written = [
            p
            for d in (
                self.crawl_dir,
                root / "images" / self.snapshot,
                root / "eval" / self.snapshot,
                root / "wikipedia",
            )
            for p in sorted(d.rglob("*"))
            if p.is_file()
        ]
        file_rows = [
            {
                "path": p.relative_to(root).as_posix(),
                "bytes": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for p in written + [pairs_path]
        ]
        return SampleManifest(
            snapshot=self.snapshot,
            seed=self.seed,
            generator_version=GENERATOR_VERSION,
            crawl_dir=f"crawl/{self.snapshot}",
            wat_files=wat_names,
            warc_files=[warc_name],
            files=file_rows,
            pages={
                "wat_generated": wat_pages,
                "wat_lost_to_truncation": self.ppf - cut_page,
                "wat_bad_records": n_bad,
                "wat_readable": readable,
                "warc_html": len(warc_pages),
                "warc_non_html": 1,
            },
            records={**self._wat_stats, **self._warc_stats},
            planted=self.planted,
            expected_skips=dict(sorted(skips.items())),
            image_links=dict(self.links),
            pairs_written={**self.written, "total": self.written["wat"] + self.written["warc"]},
            pairs_distinct=len(self.pairs),
            pairs_distinct_per_file={k: len(v) for k, v in sorted(self.per_file.items())},
            pairs_by_kind=dict(sorted(by_kind.items())),
            texts_matching_vocabulary=matching,
            vocabulary_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            planted_duplicates=self.planted_dups,
            classes=list(CLASSES),
            image_classes=self.image_classes,
            images=images,
            eval=evals,
            wikipedia=wiki,
            pairs_file=pairs_path.relative_to(root).as_posix(),
        )


# --------------------------------------------------------------------------------------------------------------
# Images: one recognisable drawing per class, randomised enough that a model must generalise.
# --------------------------------------------------------------------------------------------------------------
def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75, optimize=True)
    return buf.getvalue()


def draw_image(cls: str | None, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A 64x64 picture of `cls` (None: a decorative logo) with random colours, placement, scale and noise."""

    def jitter(rgb, amount=25):
        return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)

    bg = jitter((225, 225, 215), 30)
    if cls == "bird":
        bg = jitter((140, 190, 235))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = float(rng.uniform(0.75, 1.15)) * size / 64
    cx, cy = size / 2 + rng.uniform(-7, 7), size / 2 + rng.uniform(-7, 7)

    def box(dx0, dy0, dx1, dy1):
        return [cx + dx0 * s, cy + dy0 * s, cx + dx1 * s, cy + dy1 * s]

    def pts(*xy):
        return [(cx + x * s, cy + y * s) for x, y in xy]

    if cls == "apple":
        d.ellipse(box(-15, -13, 15, 16), fill=jitter((200, 30, 35)) if rng.random() < 0.75 else jitter((110, 190, 50)))
        d.rectangle(box(-1.5, -20, 1.5, -11), fill=(100, 60, 20))
        d.ellipse(box(2, -20, 12, -14), fill=jitter((60, 150, 40)))
    elif cls == "bird":
        body = jitter((90, 70, 60), 40)
        d.ellipse(box(-14, -6, 10, 10), fill=body)
        d.ellipse(box(4, -14, 18, 0), fill=body)
        d.polygon(pts((17, -8), (26, -5), (17, -3)), fill=(240, 160, 30))
        d.polygon(pts((-14, 0), (-26, -8), (-24, 6)), fill=body)
    elif cls == "boat":
        d.rectangle([0, cy + 8 * s, size, size], fill=jitter((40, 90, 170)))
        d.polygon(pts((-22, 4), (22, 4), (15, 14), (-15, 14)), fill=jitter((120, 70, 30)))
        d.line(pts((0, 4), (0, -24)), fill=(60, 40, 20), width=2)
        d.polygon(pts((2, -22), (2, 2), (18, 2)), fill=(250, 250, 250))
    elif cls == "car":
        paint = jitter(tuple(int(c) for c in rng.integers(30, 230, 3)), 0)
        d.rectangle(box(-24, -4, 24, 8), fill=paint)
        d.polygon(pts((-14, -4), (-8, -14), (10, -14), (16, -4)), fill=paint)
        d.rectangle(box(-6, -12, 8, -5), fill=(180, 220, 240))
        for x in (-14, 14):
            d.ellipse(box(x - 6, 4, x + 6, 16), fill=(20, 20, 20))
    elif cls == "cat":
        fur = jitter((230, 140, 50)) if rng.random() < 0.5 else jitter((130, 130, 130))
        d.polygon(pts((-16, -6), (-14, -24), (-4, -12)), fill=fur)
        d.polygon(pts((16, -6), (14, -24), (4, -12)), fill=fur)
        d.ellipse(box(-17, -15, 17, 17), fill=fur)
        for x in (-7, 7):
            d.ellipse(box(x - 3, -4, x + 3, 2), fill=(60, 170, 60))
    elif cls == "clock":
        d.ellipse(box(-20, -20, 20, 20), fill=(250, 250, 245), outline=(20, 20, 20), width=3)
        a = rng.uniform(0, 2 * np.pi)
        d.line(pts((0, 0), (11 * np.cos(a), 11 * np.sin(a))), fill=(0, 0, 0), width=3)
        d.line(pts((0, 0), (0, -16)), fill=(0, 0, 0), width=2)
    elif cls == "dog":
        fur = jitter((140, 95, 50), 35)
        d.ellipse(box(-14, -16, 14, 16), fill=fur)
        for x in (-18, 10):
            d.ellipse(box(x, -14, x + 8, 8), fill=jitter((80, 50, 25), 15))
        d.ellipse(box(-5, 5, 5, 12), fill=(15, 15, 15))
    elif cls == "flower":
        d.line(pts((0, 0), (0, 28)), fill=(40, 140, 40), width=3)
        petal = jitter((230, 80, 160), 50)
        for k in range(6):
            a = k * np.pi / 3
            px, py = 10 * np.cos(a), 10 * np.sin(a)
            d.ellipse(box(px - 7, py - 7, px + 7, py + 7), fill=petal)
        d.ellipse(box(-6, -6, 6, 6), fill=(250, 210, 40))
    elif cls == "house":
        d.rectangle(box(-18, -4, 18, 20), fill=jitter((220, 200, 160)))
        d.polygon(pts((-23, -4), (0, -24), (23, -4)), fill=jitter((170, 40, 30)))
        d.rectangle(box(-4, 6, 5, 20), fill=(90, 55, 30))
        d.rectangle(box(8, 2, 15, 9), fill=(150, 200, 240))
    elif cls == "tree":
        d.rectangle(box(-4, 4, 4, 26), fill=(110, 70, 35))
        d.ellipse(box(-20, -26, 20, 10), fill=jitter((40, 140, 50)))
    else:  # decorative logo: flat tile with bars, no class
        d.rounded_rectangle(box(-24, -14, 24, 14), radius=6, fill=jitter((60, 60, 160), 60))
        for y in (-6, 2):
            d.rectangle(box(-16, y, 16, y + 4), fill=(250, 250, 250))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------------------
# Wikipedia inputs: a MediaWiki export and hourly pageview files. Independent of snapshot and seed, so that
# generating several snapshots into one root writes identical bytes.
# --------------------------------------------------------------------------------------------------------------
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


def _base36(digest: bytes) -> str:
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
    out = root / "wikipedia"
    (out / "pageviews").mkdir(parents=True, exist_ok=True)
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
            f"      <sha1>{_base36(hashlib.sha1(data).digest())}</sha1>\n    </revision>\n  </page>"
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
        (out / "pageviews" / f"pageviews-20240301-{hour}0000.gz").write_bytes(gzip.compress(text.encode(), mtime=0))
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


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------
def make_sample_snapshot(
    root: Path, snapshot: str = "SAMPLE-2024-10", *, seed: int = 0, n_wat_files: int = 8, pages_per_file: int = 150
) -> SampleManifest:
    """Write the sample snapshot under `root` (see the module docstring) and return its manifest.

    Same (snapshot, seed, sizes) => same bytes. The snapshot name also feeds the RNG, so a second snapshot
    (e.g. "SAMPLE-2024-18") gets a drifted vocabulary and class mix even with the same seed.
    """
    root = Path(root)
    manifest = _Builder(root, snapshot, seed, n_wat_files, pages_per_file).build()
    path = root / "manifests" / f"{snapshot}.json"
    path.write_text(json.dumps(asdict(manifest), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return manifest


def load_manifest(root: Path, snapshot: str) -> SampleManifest:
    data = json.loads((Path(root) / "manifests" / f"{snapshot}.json").read_text(encoding="utf-8"))
    return SampleManifest(**data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the deterministic metaclip-assets sample snapshot.")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--snapshot", default="SAMPLE-2024-10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-wat-files", type=int, default=8)
    ap.add_argument("--pages-per-file", type=int, default=150)
    args = ap.parse_args(argv)
    m = make_sample_snapshot(
        args.root, args.snapshot, seed=args.seed, n_wat_files=args.n_wat_files, pages_per_file=args.pages_per_file
    )
    total = sum(f["bytes"] for f in m.files)
    print(f"snapshot {m.snapshot} (seed {m.seed}) under {args.root}: {len(m.files)} files, {total / 1e6:.2f} MB")
    for f in m.files:
        if not f["path"].startswith("eval/"):
            print(f"  {f['path']}  {f['bytes']} bytes")
    print(f"  eval/{m.snapshot}: {len(m.classes)} classes x {m.eval['per_class']} images")
    print(f"pages {m.pages}")
    print(f"image links {m.image_links}")
    print(f"pairs written {m.pairs_written}, distinct {m.pairs_distinct}, by kind {m.pairs_by_kind}")
    print(f"expected skips {m.expected_skips}")
    print(
        f"images {m.images['records']} records / {m.images['referenced']} referenced, "
        f"{len(m.images['missing'])} missing"
    )
    print(f"manifest {args.root / 'manifests' / (m.snapshot + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
