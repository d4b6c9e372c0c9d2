"""Image URL resolution for the readers: `UrlResolver` resolves an <img src> against its page the way urljoin does,
with exact shortcuts for the common shapes (the compiled WAT kernel copies them line for line)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlparse, urlsplit

from metaclip_assets.crawl.pool import ReadStats

# --- image URL resolution --------------------------------------------------------------------
# MetaCLIP resolves every src with urljoin(page, src), keeping relative URLs. urljoin costs
# ~20 us on the project machine (two uncached urlparse calls), more than parsing the WAT record
# itself, so the common shapes (absolute, root-relative, plain relative, protocol-relative '//h/p',
# leading '../') take shortcuts that return exactly what urljoin returns (test_pool checks this
# against urljoin on 40k generated cases, 1M when it was written); anything else calls urljoin. The shortcuts only admit
# characters urlsplit leaves untouched (no whitespace/controls, no ';' params, no '#', no '\\',
# no dot segments, no empty '?').
_NOT_URL = r"\x00-\x20\x7f#\\"  # characters no shortcut accepts anywhere
_QUERY = rf"(?:\?[^{_NOT_URL}]+)?"  # a non-empty query (urljoin drops an empty '?')
_ABS_SIMPLE = re.compile(rf"https?://[A-Za-z0-9.\-]+(?::[0-9]+)?(?:/[^{_NOT_URL};?]*)?{_QUERY}\Z")
_ROOT_SIMPLE = re.compile(rf"/[^/{_NOT_URL};?][^{_NOT_URL};?]*{_QUERY}\Z")
_REL_SIMPLE = re.compile(rf"[^./{_NOT_URL};?:][^{_NOT_URL};?:]*{_QUERY}\Z")
# A page URL whose urlparse() is plain slicing: ASCII host without userinfo/brackets, no params.
_PAGE_SIMPLE = re.compile(
    r"(https?)://([^/?#;@\[\]\\\x00-\x20\x7f]+)(/[^?#;\\\x00-\x20\x7f]*)?(?:[?#][^\x00-\x20\x7f]*)?\Z"
)


class UrlResolver:
    """Resolves image src values against one page (its <base href> if any, else the page URL)."""

    __slots__ = ("base", "_origin", "_scheme", "_dir", "_parses")

    def __init__(self, page_url: str, base_href: str | None = None) -> None:
        base = page_url
        if base_href:
            try:  # a relative <base href> is itself relative to the page; a broken one is ignored
                base = urljoin(page_url, base_href.strip())
            except ValueError:
                pass
        self.base = base
        self._origin = self._dir = self._scheme = None
        self._parses = True
        m = _PAGE_SIMPLE.match(base)
        if m and m.group(2).isascii():  # urlparse costs ~10 us per page; most page URLs are plain
            scheme, netloc, path = m.group(1), m.group(2), m.group(3) or ""
            host = netloc.partition(":")[0]
        else:
            try:
                parsed = urlparse(base)
            except ValueError:  # urljoin fails for every src then, even absolute ones
                self._parses = False
                return
            scheme, netloc, path, host = parsed.scheme, parsed.netloc, parsed.path, parsed.hostname
        if scheme in ("http", "https") and host:  # results must name a host, as resolve() promises
            self._origin, self._scheme = f"{scheme}://{netloc}", scheme
            # urljoin keeps the base path up to its last '/'; only plain paths take the shortcut
            if "//" not in path and "/." not in path:
                self._dir = path[: path.rfind("/") + 1] or "/"

    def shortcut_parts(self) -> tuple[bool, str | None, str | None, str | None]:
        """(parses, origin, scheme, dir): the state resolve()'s shortcuts read, for the compiled copy in _native/wat_rows.c."""
        return self._parses, self._origin, self._scheme, self._dir

    def resolve(self, src: str) -> str | None:
        """Absolute http(s) URL for `src` (already stripped), or None if it has none."""
        if not self._parses:
            return None
        if _ABS_SIMPLE.match(src):
            return src
        if self._origin is not None:
            if _ROOT_SIMPLE.match(src) and "/." not in src:
                return self._origin + src
            if src[:2] == "//":  # protocol-relative: urljoin takes the base's scheme and changes nothing else
                url = self._scheme + ":" + src
                if _ABS_SIMPLE.match(url):
                    return url
            elif self._dir is not None:
                ups = 0  # leading "../" segments: each drops one directory of the base (none above the root)
                while src.startswith("../", 3 * ups):
                    ups += 1
                rest = src[3 * ups :] if ups else src
                if _REL_SIMPLE.match(rest) and "/." not in rest and "//" not in rest:
                    if not ups:
                        return self._origin + self._dir + src
                    dirs = self._dir.split("/")[1:-1]
                    return self._origin + "/" + "".join(d + "/" for d in dirs[: max(0, len(dirs) - ups)]) + rest
        try:
            url = urljoin(self.base, src)
            p = urlsplit(url)
        except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 bracket)
            return None
        if p.scheme not in ("http", "https") or not p.hostname:
            return None
        return url


def image_url(src: str, resolver: UrlResolver, stats: ReadStats) -> str | None:
    """The absolute URL of an <img src> / IMG@/src value as MetaCLIP takes it (stripped, resolved against the page),
    or None with the reason counted: empty (no_src), inline bytes (data_uri, nothing to fetch), unresolvable (bad_url).
    """
    src = src.strip()
    if not src:
        stats.count("no_src")
        return None
    if src[:5].lower() == "data:":
        stats.count("data_uri")
        return None
    url = resolver.resolve(src)
    if url is None:
        stats.skip("bad_url")
    return url
