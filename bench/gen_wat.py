"""Deterministic generator of realistic Common Crawl WAT files (*.warc.wat.gz), for benchmarks without network.

Layout as in real CC WAT files (checked against ../shared/realdata/cc-whirlwind/whirlwind.warc.wat.gz and published
CC-MAIN WAT records; metaclip-facts.md "Real WAT layout"): one gzip member per record; a `warcinfo` record first,
then per captured page three `WARC-Type: metadata` records -- for the WARC request, the response and the crawl
metadata record -- each with WARC-Target-URI, WARC-Date (extraction time), WARC-Record-ID, WARC-Refers-To,
Content-Type: application/json, Content-Length and sha1 digests, CRLF header lines, a single-line JSON payload and
CRLF CRLF after it. Payload: {"Container": {...}, "Envelope": {"Payload-Metadata": {...}, "Format", "WARC-Header-
Length", "WARC-Header-Metadata": {...}}}; response records carry HTTP-Response-Metadata -> HTML-Metadata ->
{"Head": {Title, Metas, Link, Scripts, sometimes Base}, "Links": [A@/href, IMG@/src, ...]}. JSON is compact UTF-8
with '/' and '@' unescaped, like CC's writer. Records and JSON documents are written by
metaclip_assets.sample.warc_writer, the writer the sample snapshot and the tests share; unlike the sample's, the
lengths, offsets and digests inside the JSON are plausible rather than true (no WARC file stands behind this WAT).

Content: alt texts from bench/gen_texts.py (so they match the bench metadata list), ~12 IMG links per HTML page
(~60% with a non-empty alt, some titles, empty alts, alts with newlines), absolute / root-relative / relative /
protocol-relative / "../" / data: image URLs, query strings; ~5% non-HTML responses, ~3% redirects, ~2% HTML pages
without links, ~1% pages with <base href>.

Usage: python bench/gen_wat.py OUT.warc.wat.gz [--mib 32] [--seed 0] [--entries 500000]
  --mib is the UNCOMPRESSED size to reach (several hundred MiB on request: --mib 300).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_metadata import generate_metadata  # noqa: E402
from gen_texts import iter_texts  # noqa: E402

from metaclip_assets.sample import warc_writer as W  # noqa: E402

_TLDS = ["com", "com", "com", "org", "net", "de", "co.uk", "fr", "info", "io", "es", "it", "nl", "ru", "com.au"]
_SYL = (
    "ba be bi bo bu ca co da de di do fa fe fi ga go ha he hi ka ke ki la le li lo lu ma me mi mo na ne ni no pa pe "
    "pi po ra re ri ro sa se si so ta te ti to va ve vi wa we za".split()
)
_DIRS = [
    "wp-content/uploads",
    "images",
    "img",
    "static/media",
    "assets/img",
    "uploads",
    "media/catalog/product",
    "files",
    "content/images",
    "cdn/shop/products",
]
_EXT = [".jpg", ".jpg", ".jpg", ".png", ".png", ".gif", ".webp", ".jpeg", ".svg"]
_SERVERS = ["nginx", "Apache", "cloudflare", "Microsoft-IIS/10.0", "LiteSpeed", "openresty"]
_LANGS = [("en", "eng", "ENGLISH")] * 6 + [
    ("de", "deu", "GERMAN"),
    ("fr", "fra", "FRENCH"),
    ("es", "spa", "SPANISH"),
    ("ru", "rus", "RUSSIAN"),
    ("ja", "jpn", "Japanese"),
]


def _word(rng: random.Random, lo: int = 1, hi: int = 3) -> str:
    return "".join(rng.choice(_SYL) for _ in range(rng.randint(lo, hi)))


class _Page:
    """Random but deterministic page content."""

    def __init__(self, rng: random.Random, texts, link_texts: list[str]):
        self.rng, self.texts, self.link_texts = rng, texts, link_texts

    def image_src(self, host: str) -> str:
        rng = self.rng
        name = f"{_word(rng, 1, 4)}-{rng.randint(1, 9999)}"
        if rng.random() < 0.3:
            name += f"-{rng.choice([150, 300, 640, 768, 1024])}x{rng.choice([100, 200, 480, 576, 683])}"
        path = f"{rng.choice(_DIRS)}/{rng.randint(2015, 2024)}/{rng.randint(1, 12):02d}/{name}{rng.choice(_EXT)}"
        r = rng.random()
        if r < 0.35:
            src = f"https://{host}/{path}"
        elif r < 0.45:
            src = f"https://cdn.{host}/{path}"
        elif r < 0.70:
            src = "/" + path
        elif r < 0.85:
            src = path
        elif r < 0.92:
            src = f"//img.{host}/{path}"
        elif r < 0.95:
            src = "../" + path
        elif r < 0.97:
            src = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
        elif r < 0.98:
            src = f"/{path.replace('-', ' ', 1)}"  # a space: not a shortcut URL shape, resolved by urljoin
        else:
            src = f"http://{host}:8080/{path}"
        if rng.random() < 0.1:
            src += f"?v={rng.randint(1, 99)}&w={rng.choice([200, 400, 800])}"
        return src

    def links(self, host: str) -> list[dict]:
        rng = self.rng
        out = []
        n_a = rng.randint(15, 120)
        n_img = min(int(rng.expovariate(1 / 12)), 80)
        slots = ["a"] * n_a + ["img"] * n_img
        rng.shuffle(slots)
        for kind in slots:
            if kind == "a":
                link = {
                    "path": "A@/href",
                    "url": f"https://{host}/{_word(rng)}/{_word(rng, 2, 4)}",
                    "text": rng.choice(self.link_texts),
                }
                if rng.random() < 0.1:
                    link["title"] = rng.choice(self.link_texts)
                out.append(link)
                continue
            link = {"path": "IMG@/src", "url": self.image_src(host)}
            r = rng.random()
            if r < 0.60:
                alt = next(self.texts)
                if rng.random() < 0.03:
                    alt = alt.replace(" ", "\n", 1) + " \r\n"
                link["alt"] = alt
            elif r < 0.70:
                link["alt"] = rng.choice(["", " ", "image", "logo", "Logo", "icon"])
            if rng.random() < 0.08:
                link["title"] = next(self.texts)
            out.append(link)
        if rng.random() < 0.05:
            out.append({"path": "FORM@/action", "url": f"/search?q={_word(rng)}", "method": "get"})
        return out


def generate_wat(path: Path, mib: float = 32, seed: int = 0, entries: int = 500_000) -> dict:
    """Write a WAT file of about ``mib`` MiB uncompressed; returns counts."""
    rng = random.Random(seed)
    metadata, _ = generate_metadata(entries, seed)
    texts = iter_texts(metadata, seed + 1)
    link_texts = [next(texts)[:40] for _ in range(3000)] + ["Home", "About", "Contact", "Privacy Policy", "Next", "»"]
    page = _Page(rng, texts, link_texts)
    seg_name = f"CC-MAIN-20240517233122-20240518023122-{seed % 100000:05d}"
    w = W.MemberWriter(Path(path))
    info = W.fields_block(
        [
            ("Software-Info", "ia-web-commons.1.1.10-SNAPSHOT-20240513074037"),
            ("Extracted-Date", "Fri, 31 May 2024 01:16:45 GMT"),
            ("ip", "10.67.67.159"),
            ("hostname", "ip-10-67-67-159.ec2.internal"),
            ("format", "WARC File Format 1.0"),
            ("conformsTo", "http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf"),
        ],
        blank_line=False,
    ).encode()
    info_id = W.urn_uuid(rng.getrandbits(128))
    w.record(W.warcinfo_headers(f"{seg_name}.warc.wat.gz", "2024-05-31T01:16:45Z", info_id, info, wat=True), info)
    warcinfo_id = W.urn_uuid(rng.getrandbits(128))
    offset = 1200
    pages = img_links = 0
    target = mib * 2**20
    while w.raw < target:
        pages += 1
        host = f"www.{_word(rng, 2, 3)}{rng.choice(['', '-' + _word(rng)])}.{rng.choice(_TLDS)}"
        url = f"https://{host}/{_word(rng)}/{_word(rng, 2, 4)}-{rng.randint(1, 99999)}"
        if rng.random() < 0.1:
            url += f"?id={rng.randint(1, 10**6)}"
        day, hh, mm, ss = rng.randint(17, 18), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        fetch = f"2024-05-{day}T{hh:02d}:{mm:02d}:{ss:02d}Z"
        extract = f"2024-05-31T01:{rng.randint(16, 59):02d}:{rng.randint(0, 59):02d}Z"
        ip = f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        ids = [W.urn_uuid(rng.getrandbits(128)) for _ in range(6)]
        path_only = url.split(host, 1)[1]
        # ---- request
        req_pm = W.request_metadata(
            "GET",
            path_only,
            "HTTP/1.1",
            str(rng.randint(240, 300)),
            dict(W.ccbot_request_headers(host)),
            actual_length=str(rng.randint(240, 300)),
            block_digest=W.sha1_b32(ids[0].encode()),
        )
        # ---- response
        r = rng.random()
        status, reason, ctype = ("200", "OK", "text/html; charset=UTF-8")
        html_md = None
        if r < 0.05:
            ctype = rng.choice(["image/jpeg", "application/pdf", "application/json", "text/plain"])
        elif r < 0.08:
            status, reason = "301", "Moved Permanently"
        else:
            head = {
                "Title": next(texts)[:70],
                "Metas": [{"name": "viewport", "content": "width=device-width, initial-scale=1"}]
                + [
                    {"property": f"og:{k}", "content": next(texts)[:120]}
                    for k in ("title", "description")[: rng.randint(0, 2)]
                ],
                "Link": [
                    {"path": "LINK@/href", "url": f"https://{host}/{_word(rng)}.css", "rel": "stylesheet"}
                    for _ in range(rng.randint(1, 3))
                ]
                + [{"path": "LINK@/href", "url": url, "rel": "canonical"}],
            }
            if rng.random() < 0.6:
                head["Scripts"] = [
                    {"path": "SCRIPT@/src", "url": f"/js/{_word(rng)}.js"} for _ in range(rng.randint(1, 3))
                ]
            if rng.random() < 0.01:
                head["Base"] = f"https://static.{host}/{_word(rng)}/"
            html_md = {"Head": head}
            if rng.random() > 0.02:
                links = page.links(host)
                img_links += sum(1 for x in links if x["path"] == "IMG@/src")
                html_md["Links"] = links
        headers = {
            "Date": "Sat, 18 May 2024 01:58:10 GMT",
            "Server": rng.choice(_SERVERS),
            "Content-Type": ctype,
            "X-Crawler-Content-Encoding": "gzip",
            "Vary": "Accept-Encoding",
        }
        if status == "301":
            headers["Location"] = f"https://{host}/{_word(rng)}/"
        entity_len = rng.randint(2_000, 200_000)
        resp_pm = W.response_metadata(
            status,
            reason,
            str(rng.randint(300, 900)),
            headers,
            html_md,
            entity_length=str(entity_len),
            entity_digest=W.sha1_b32(ids[1].encode()),
            actual_length=str(entity_len + 500),
            block_digest=W.sha1_b32(ids[2].encode()),
        )
        # ---- crawl metadata record
        lang = rng.choice(_LANGS)
        langs = W.languages_cld2(rng.randint(500, 50_000), lang[0], lang[1], lang[2], 0.99, 700.0)
        meta_pm = W.fields_metadata(
            [("fetchTimeMs", str(rng.randint(20, 3000))), ("charset-detected", "UTF-8"), ("languages-cld2", langs)],
            actual_length=str(rng.randint(150, 260)),
        )
        for (wtype, ctype_rec, pm), rec_id, ref_id in zip(
            (
                ("request", "application/http; msgtype=request", req_pm),
                ("response", "application/http; msgtype=response", resp_pm),
                ("metadata", "application/warc-fields", meta_pm),
            ),
            ids[3:],
            ids[:3],
        ):
            inflated = rng.randint(400, 60_000)
            doc = W.wat_document(
                f"{seg_name}.warc.gz",
                offset,
                deflate_length=str(inflated // 4),
                inflated_crc=str(rng.randint(-(2**31), 2**31 - 1)),
                inflated_length=str(inflated),
                payload_metadata=pm,
                header_length=str(rng.randint(300, 700)),
                header_metadata={
                    "WARC-Type": wtype,
                    "WARC-Date": fetch,
                    "WARC-Record-ID": ref_id,
                    "Content-Length": str(inflated),
                    "Content-Type": ctype_rec,
                    "WARC-Warcinfo-ID": warcinfo_id,
                    "WARC-IP-Address": ip,
                    "WARC-Target-URI": url,
                },
            )
            offset += inflated // 4 + 18
            payload = W.json_text(doc).encode()
            w.record(W.wat_headers(url, extract, rec_id, ref_id, payload), payload)
    w.close()
    return {
        "pages": pages,
        "records": w.records,
        "raw_mib": round(w.raw / 2**20, 1),
        "gz_mib": round(Path(path).stat().st_size / 2**20, 1),
        "img_links": img_links,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mib", type=float, default=32, help="uncompressed size in MiB (default 32; e.g. 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entries", type=int, default=500_000, help="size of the metadata list the alt texts draw on")
    args = ap.parse_args(argv)
    print(generate_wat(args.out, args.mib, args.seed, args.entries))


if __name__ == "__main__":
    main()
