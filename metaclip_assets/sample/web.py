"""The sample's web: sites, the image pool they share, and the pages that show those images with alt texts.

One random stream (`Captions.rng`) drives texts and pages, in a fixed order, so equal seeds give equal pages.
Image `src` attributes are written absolute, root-relative, protocol-relative or under a `<base href>`, each
checked to resolve back to the canonical URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urljoin, urlsplit

import numpy as np

from metaclip_assets.sample.texts import BRANDS, CLASSES, Captions, clean_wat_text


@dataclass
class Text:
    key: str  # alt | title | data-image-title
    raw: str  # attribute value as written
    kind: str  # caption | caption_noclass | nomatch | messy | brand | empty


@dataclass
class Img:
    ref: str  # src attribute as written
    url: str | None  # resolved URL, None when unparseable
    texts: list[Text]
    link: str | None = None  # wrapping <a href>, if any


@dataclass
class Site:
    host: str
    brand: str
    scheme: str
    base: str | None  # <base href> every page of the site carries
    ip: str
    images: list = field(default_factory=list)


@dataclass
class PoolImage:
    url: str
    cls: str | None
    home: Site | None  # None: hosted on a shared CDN
    captions: list[tuple[str, str]]


@dataclass
class Page:
    url: str
    site: Site
    title: str
    imgs: list[Img]
    fetch: datetime
    charset: str = "UTF-8"
    lazy: list[Img] = field(default_factory=list)  # <img data-src> without src: no URL, not a pair


def reference(canonical: str, page_url: str, base: str | None, style: str) -> str:
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


class Web:
    """Generates the sites, the image pool and the pages of one snapshot.

    `image_classes` maps every image URL handed out to its class (None: a decorative logo), in generation order.
    """

    def __init__(self, texts: Captions, n_pages: int):
        self.texts, self.rng = texts, texts.rng
        self._pick, self._hex, self._text = texts.pick, texts.hex, texts.text
        self.image_classes: dict[str, str | None] = {}
        self._cdn: list[PoolImage] = []
        self.sites = self._make_sites(max(12, n_pages // 30))
        self.pool = self._make_pool(self.sites, max(60, n_pages // 2))
        self._cdn = [p for p in self.pool if p.home is None]

    def crawl(self, n_files: int, per_file: int, t0: datetime) -> list[list[Page]]:
        """Pages grouped by file in crawl order; sites are Zipf-popular, like real crawls."""
        sites, pool = self.sites, self.pool
        site_p = 1.0 / np.arange(1, len(sites) + 1) ** 0.7
        site_p /= site_p.sum()
        files: list[list[Page]] = []
        for f in range(n_files):
            pages = []
            for k in range(per_file):
                site = sites[int(self.rng.choice(len(sites), p=site_p))]
                pages.append(self._page(site, pool, f * per_file + k, t0 + timedelta(seconds=37 * (f * per_file + k))))
            files.append(pages)
        return files

    def warc_pages(self, t0: datetime, wat_pair: tuple[str, str]) -> list[Page]:
        """The HTML WARC's pages: the hand-made edge cases, then 20 ordinary pages."""
        sites = self.sites
        pages = self._special_warc_pages(sites, self.pool, t0, wat_pair)
        pages += [
            self._page(
                sites[int(self.rng.integers(len(sites)))],
                self.pool,
                100000 + i,
                t0 + timedelta(hours=3, seconds=41 * i),
            )
            for i in range(20)
        ]
        return pages

    def _make_sites(self, n_sites: int) -> list[Site]:
        sites = []
        tlds = (".com", ".net", ".org", ".co.uk", ".de", ".io")
        for i in range(n_sites):
            brand = BRANDS[i % len(BRANDS)] + (str(i // len(BRANDS)) if i >= len(BRANDS) else "")
            host = f"www.{brand.lower()}{tlds[i % len(tlds)]}"
            scheme = "http" if i % 11 == 5 else "https"  # a few legacy http sites (absolute srcs only)
            base = f"https://static.{brand.lower()}{tlds[i % len(tlds)]}/assets/" if i % 9 == 4 else None
            ip = ".".join(str(int(x)) for x in self.rng.integers(1, 255, 4))
            sites.append(Site(host, brand, scheme, base, ip))
        return sites

    def _make_pool(self, sites: list[Site], n_images: int) -> list[PoolImage]:
        pool = []
        for i in range(n_images):
            cls = CLASSES[int(self.rng.choice(len(CLASSES), p=self.texts.class_p))]
            site = sites[int(self.rng.integers(len(sites)))] if self.rng.random() < 0.7 else None
            stem = self._pick([f"IMG_{1000 + i}", f"{cls}-{self._hex(6)}", self._hex(16), f"DSC{i:05d}"])
            if site is None:
                url = f"https://cdn.imgix-sample.net/i/{self._hex(2)}/{stem}.jpg?w=640&q=80"
            elif site.base:
                url = f"{site.base}img/{stem}.jpg"
            else:
                url = f"{site.scheme}://{site.host}/wp-content/uploads/2024/{1 + i % 12:02d}/{stem}.jpg"
            captions = [self._text(cls) for _ in range(int(self.rng.integers(1, 3)))]
            img = PoolImage(url, cls, site, captions)
            if site:
                site.images.append(img)
            pool.append(img)
            self.image_classes[url] = cls
        return pool

    def _img(self, page_url: str, site: Site, pimg: PoolImage) -> Img:
        if site.base and pimg.home is site:
            style = "base"
        else:
            style = self._pick(["abs", "root", "proto"], [0.4, 0.8, 1.0])
        ref = reference(pimg.url, page_url, site.base, style)
        texts: list[Text] = []
        u = self.rng.random()
        if u < 0.05:
            pass  # no alt attribute at all
        elif u < 0.10:
            texts.append(Text("alt", self._pick(["", " ", "\n"]), "empty"))
        elif u < 0.80:
            raw, kind = pimg.captions[int(self.rng.integers(len(pimg.captions)))]
            texts.append(Text("alt", raw, kind))
        else:
            raw, kind = self._text(pimg.cls)
            texts.append(Text("alt", raw, kind))
        if self.rng.random() < 0.12:
            same = texts and self.rng.random() < 0.5
            texts.append(Text("title", *((texts[0].raw, texts[0].kind) if same else self._text(pimg.cls))))
        if self.rng.random() < 0.05:
            texts.append(Text("data-image-title", *self._text(pimg.cls)))
        return Img(ref, pimg.url, texts)

    def _logo(self, page_url: str, site: Site) -> Img:
        url = (site.base + "logo.jpg") if site.base else f"{site.scheme}://{site.host}/static/logo.jpg"
        self.image_classes[url] = None
        ref = reference(url, page_url, site.base, "base" if site.base else "root")
        u = self.rng.random()
        texts = [Text("alt", site.brand, "brand")] if u < 0.6 else [Text("alt", "", "empty")] if u < 0.85 else []
        return Img(ref, url, texts, link="/")

    def _page(self, site: Site, pool: list[PoolImage], k: int, when: datetime) -> Page:
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
        return Page(page_url, site, title, imgs, when)

    def _cdn_pick(self, pool: list[PoolImage]) -> PoolImage:
        cdn = self._cdn
        return cdn[int(self.rng.integers(len(cdn)))] if cdn else pool[int(self.rng.integers(len(pool)))]

    def _special_warc_pages(self, sites: list[Site], pool: list[PoolImage], t0: datetime, wat_pair: tuple[str, str]):
        """Hand-made edge cases for the WARC reader (whitespace, entities, charset, <base>, duplicates)."""
        when = t0 + timedelta(hours=2, minutes=50)
        https_site = next(s for s in sites if s.base is None and s.scheme == "https")
        base_site = next(s for s in sites if s.base)
        imgs = [p for p in pool if p.home is https_site] or pool
        pages: list[Page] = []

        def mk(site, slug, title, texts_per_img, charset="UTF-8", k=0):
            """A page whose j-th image gets texts_per_img[j]; '{cls}' becomes that image's class word."""
            url = f"{site.scheme}://{site.host}/{slug}"
            img_list = [self._logo(url, site)]
            for j, texts in enumerate(texts_per_img):
                candidates = [p for p in pool if p.home is site] or imgs
                pimg = candidates[(k + j) % len(candidates)]
                style = "base" if site.base and pimg.home is site else ("root", "proto", "abs")[j % 3]
                img_list.append(
                    Img(
                        reference(pimg.url, url, site.base, style),
                        pimg.url,
                        [Text(key, raw.format(cls=pimg.cls), kind) for key, raw, kind in texts],
                    )
                )
            pages.append(Page(url, site, title, img_list, when + timedelta(seconds=len(pages) * 3), charset))
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
        p.lazy.append(Img(imgs[0].url, None, [Text("alt", f"lazy {imgs[0].cls}", "caption")]))
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
        p.imgs.append(Img(wat_pair[0], wat_pair[0], [Text("alt", wat_pair[1], "caption")]))
        return pages

    def plant_duplicates(self, files: list[list[Page]]) -> tuple[str, str, list[tuple[int, Page]]]:
        """Copy one captioned image link into another page of the same file and into the next file.

        Returns the image URL, its cleaned alt text and the (file index, page) of the three copies.
        """
        for k in range(12, len(files[0]) - 1):  # clear of the pages that get bad records
            img = next((i for i in files[0][k].imgs[1:] if i.texts and i.texts[0].kind == "caption"), None)
            if img is not None:
                break
        else:
            raise RuntimeError("no captioned image to duplicate")  # cannot happen with >= 16 pages per file
        alt = img.texts[0]
        for f, j in ((0, k + 1), (1, 5)):
            page = files[f][j]
            page.imgs.append(
                Img(reference(img.url, page.url, page.site.base, "abs"), img.url, [Text("alt", alt.raw, alt.kind)])
            )
        return img.url, clean_wat_text(alt.raw), [(f, files[f][j]) for f, j in ((0, k), (0, k + 1), (1, 5))]
