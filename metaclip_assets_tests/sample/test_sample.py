"""Tests for the generated sample snapshot.

The manifest's numbers are checked against an independent mini reader written here (warcio + json + selectolax),
so the generator's own bookkeeping cannot hide a mismatch with the bytes on disk. The real pool reader is not used.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import re
import time
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from warcio.archiveiterator import ArchiveIterator

from metaclip_assets.sample import snapshot as S
from metaclip_assets.sample import texts as T
from metaclip_assets.sample.wikipedia import base36

KEYS = ("alt", "title", "data-image-title")
SMALL = {"n_wat_files": 3, "pages_per_file": 20}


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    t0 = time.perf_counter()
    manifest = S.make_sample_snapshot(root)
    return root, manifest, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# An independent reader, following metaclip-facts.md section 3
# ---------------------------------------------------------------------------------------------------------------
def members(data: bytes):
    """(offset, inflated bytes, complete) for each gzip member."""
    off = 0
    while off < len(data):
        z = zlib.decompressobj(31)
        out = z.decompress(data[off:])
        yield off, out, z.eof
        if not z.eof:
            return
        off = len(data) - len(z.unused_data)


def read_snapshot(root: Path, m: S.SampleManifest):
    skips: Counter = Counter()
    links: Counter = Counter()
    pairs: Counter = Counter()  # (url, text) -> occurrences
    per_file: dict[str, set] = {}
    written: Counter = Counter()
    crawl = root / m.crawl_dir

    def add(fmt, file, url, texts):
        texts = [t for t in texts if t]
        if not texts:
            links["no_text"] += 1
        for t in texts:
            written[fmt] += 1
            pairs[(url, t)] += 1
            per_file.setdefault(file, set()).add((url, t))

    for name in m.wat_files:
        for _off, raw, complete in members((crawl / name).read_bytes()):
            if not complete:
                skips["truncated_gzip"] += 1
                continue
            rec = next(iter(ArchiveIterator(io.BytesIO(raw))))
            if rec.rec_type != "metadata":
                continue
            payload = rec.content_stream().read()
            try:
                obj = json.loads(payload.decode("utf-8"))
            except UnicodeDecodeError:
                skips["bad_encoding"] += 1
                continue
            except json.JSONDecodeError:
                skips["bad_json"] += 1
                continue
            env = obj["Envelope"]
            whm = env["WARC-Header-Metadata"]
            if whm["WARC-Type"] != "response":
                continue
            if "Payload-Metadata" not in env:
                skips["missing_field"] += 1
                continue
            html_meta = env["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
            base = html_meta["Head"].get("Base")
            for link in html_meta["Links"]:
                if not link["path"].startswith("IMG@/src") or "url" not in link:
                    continue
                links["wat"] += 1
                try:
                    url = urljoin(base or whm["WARC-Target-URI"], link["url"])
                except ValueError:
                    skips["bad_url"] += 1
                    links["bad_url"] += 1
                    continue
                add("wat", name, url, [T.clean_wat_text(link[k]) for k in KEYS if k in link])

    for name in m.warc_files:
        with open(crawl / name, "rb") as fh:
            for rec in ArchiveIterator(fh):
                if rec.rec_type != "response":
                    continue
                ctype = rec.http_headers.get_header("Content-Type")
                if not ctype.startswith("text/html"):
                    continue  # not HTML: counted by readers, but not a bad record
                charset = re.search(r"charset=([\w-]+)", ctype).group(1)
                tree = HTMLParser(rec.content_stream().read().decode(charset))
                base_tag = tree.css_first("base")
                base = base_tag.attributes.get("href") if base_tag else None
                page = rec.rec_headers.get_header("WARC-Target-URI")
                for img in tree.css("img"):
                    src = img.attributes.get("src")
                    if src is None:
                        links["without_src"] += 1
                        continue
                    links["warc"] += 1
                    url = urljoin(base or page, src)
                    add(
                        "warc",
                        name,
                        url,
                        [T.clean_warc_text(img.attributes[k] or "") for k in KEYS if k in img.attributes],
                    )
    return skips, links, pairs, per_file, written


@pytest.fixture(scope="module")
def reread(default):
    root, m, _ = default
    return read_snapshot(root, m)


def load_pairs(root: Path, m: S.SampleManifest) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress((root / m.pairs_file).read_bytes()).splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# Layout, determinism, size
# ---------------------------------------------------------------------------------------------------------------
def test_layout_and_manifest_roundtrip(default):
    root, m, _ = default
    crawl = root / "crawl" / m.snapshot
    names = sorted(p.name for p in crawl.iterdir())
    assert names == sorted(m.wat_files + m.warc_files)  # nothing but crawl files in the crawl dir
    assert len(m.wat_files) == 8 and all(
        re.fullmatch(r"CC-MAIN-\d{14}-\d{14}-\d{5}\.warc\.wat\.gz", n) for n in m.wat_files
    )
    assert re.fullmatch(r"CC-MAIN-\d{14}-\d{14}-00008\.warc\.gz", m.warc_files[0])
    assert (root / "images" / m.snapshot / "images.warc.gz").is_file()
    assert S.load_manifest(root, m.snapshot) == m
    for f in m.files:
        data = (root / f["path"]).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"], f["path"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = S.make_sample_snapshot(tmp_path / "a", "TEST-2024-05", seed=7, **SMALL)
    manifest_bytes = (tmp_path / "a/manifests/TEST-2024-05.json").read_bytes()
    again = S.make_sample_snapshot(tmp_path / "a", "TEST-2024-05", seed=7, **SMALL)  # in place, over the old
    assert again.files == a.files
    assert (tmp_path / "a/manifests/TEST-2024-05.json").read_bytes() == manifest_bytes
    c = S.make_sample_snapshot(tmp_path / "c", "TEST-2024-05", seed=8, **SMALL)
    sha = {f["path"]: f["sha256"] for f in c.files}
    assert all(sha[f["path"]] != f["sha256"] for f in a.files if f["path"].startswith("crawl/"))
    # The Wikipedia inputs do not depend on seed or snapshot (several snapshots share one root).
    assert all(sha[f["path"]] == f["sha256"] for f in a.files if f["path"].startswith("wikipedia/"))


def test_size_and_speed(default):
    _, m, seconds = default
    assert sum(f["bytes"] for f in m.files) < 5_000_000
    assert seconds < 30  # ~3-4 s on the project machine; generous bound for loaded CI runners


def test_rejects_too_small_configs(tmp_path):
    with pytest.raises(ValueError):
        S.make_sample_snapshot(tmp_path, n_wat_files=2, pages_per_file=20)


# ---------------------------------------------------------------------------------------------------------------
# Record-level format
# ---------------------------------------------------------------------------------------------------------------
def test_every_record_parses_except_the_truncated_one(default):
    root, m, _ = default
    truncated = next(p for p in m.planted if p["reason"] == "truncated_gzip")
    for name, stats in m.records.items():
        data = (root / m.crawl_dir / name).read_bytes()
        assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # gzip mtime 0
        n = 0
        with open(root / m.crawl_dir / name, "rb") as fh:
            for rec in ArchiveIterator(fh, check_digests=True):
                body = rec.content_stream().read()
                n += 1
                if name == truncated["file"] and n == stats["records_written"]:
                    # warcio does not raise on a cut gzip member: it yields a short record.
                    assert len(body) < int(rec.rec_headers.get_header("Content-Length"))
                else:
                    assert rec.digest_checker.passed is True, (name, n)  # block/payload digests
        assert n == stats["records_written"]
        complete = sum(1 for _, _, ok in members(data) if ok)
        assert complete == stats["records_readable"]


def test_one_gzip_member_per_record_and_cc_record_layout(default):
    root, m, _ = default
    data = (root / m.crawl_dir / m.wat_files[1]).read_bytes()
    recs = [raw for _, raw, _ in members(data)]
    assert recs[0].startswith(b"WARC/1.0\r\nWARC-Type: warcinfo\r\n")
    assert b"Software-Info: ia-web-commons" in recs[0]
    wat_header_order = [
        "WARC-Type",
        "WARC-Target-URI",
        "WARC-Date",
        "WARC-Record-ID",
        "WARC-Refers-To",
        "Content-Type",
        "Content-Length",
        "WARC-Payload-Digest",
        "WARC-Block-Digest",
    ]
    kinds = []
    for raw in recs[1:]:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0] == "WARC/1.0" and raw.count(b"WARC/1.0\r\n") == 1
        hdr = dict(line.split(": ", 1) for line in lines[1:])
        assert list(hdr) == wat_header_order and hdr["WARC-Type"] == "metadata"
        payload = rest[: int(hdr["Content-Length"])]
        assert rest[len(payload) :] == b"\r\n\r\n" and b"\n" not in payload
        if b"\xe9t\xe9" in payload:  # the planted invalid-UTF-8 record (a response)
            kinds.append("response")
            continue
        assert b"\\/" not in payload  # '/' unescaped, like CommonCrawl's writer
        obj = json.loads(payload)
        assert list(obj) == ["Container", "Envelope"]
        assert set(obj["Container"]) == {"Filename", "Compressed", "Offset", "Gzip-Metadata"}
        env = obj["Envelope"]
        whm = env["WARC-Header-Metadata"]
        assert hdr["WARC-Refers-To"] == whm["WARC-Record-ID"]
        assert hdr["WARC-Target-URI"] == whm["WARC-Target-URI"]
        kinds.append(whm["WARC-Type"])
        pm = env["Payload-Metadata"]
        if whm["WARC-Type"] == "request":
            assert "HTTP-Request-Metadata" in pm
        elif whm["WARC-Type"] == "response":
            assert b'"path":"IMG@/src"' in payload
            hrm = pm["HTTP-Response-Metadata"]
            assert hrm["Response-Message"]["Status"] == "200"
            assert set(hrm["HTML-Metadata"]) == {"Head", "Links"} and "Title" in hrm["HTML-Metadata"]["Head"]
        else:
            assert pm["Actual-Content-Type"] == "application/metadata-fields"
    assert kinds == ["request", "response", "metadata"] * (len(kinds) // 3)


def test_planted_bad_records_fail_the_way_they_should(default):
    root, m, _ = default
    by_reason = {p["reason"]: p for p in m.planted}
    assert set(by_reason) == {"truncated_gzip", "bad_json", "bad_encoding", "missing_field", "bad_url", "not_html"}
    for reason in ("bad_json", "bad_encoding", "missing_field"):
        p = by_reason[reason]
        data = (root / m.crawl_dir / p["file"]).read_bytes()
        raw = zlib.decompressobj(31).decompress(data[p["offset"] :])
        rec = next(iter(ArchiveIterator(io.BytesIO(raw))))
        assert rec.rec_headers.get_header("WARC-Target-URI") == p["page_url"]
        payload = rec.content_stream().read()
        if reason == "bad_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(payload.decode("utf-8"))
        elif reason == "bad_encoding":
            with pytest.raises(UnicodeDecodeError):
                payload.decode("utf-8")
            assert json.loads(payload.decode("latin-1"))  # otherwise fine JSON
        else:
            env = json.loads(payload)["Envelope"]
            assert env["WARC-Header-Metadata"]["WARC-Type"] == "response" and "Payload-Metadata" not in env
    bad = by_reason["bad_url"]
    raw = zlib.decompressobj(31).decompress((root / m.crawl_dir / bad["file"]).read_bytes()[bad["offset"] :])
    assert b'"url":"http://[::1/images/dog.jpg"' in raw and bad["page_url"].encode() in raw
    cut = by_reason["truncated_gzip"]
    size = (root / m.crawl_dir / cut["file"]).stat().st_size
    assert size == cut["cut_at"] > cut["offset"]


# ---------------------------------------------------------------------------------------------------------------
# The manifest's numbers, re-derived from the bytes
# ---------------------------------------------------------------------------------------------------------------
def test_manifest_counts_match_an_independent_reader(default, reread):
    root, m, _ = default
    skips, links, pairs, per_file, written = reread
    assert dict(skips) == m.expected_skips
    assert dict(links) == {k: v for k, v in m.image_links.items() if v}
    assert written["wat"] == m.pairs_written["wat"] and written["warc"] == m.pairs_written["warc"]
    assert sum(pairs.values()) == m.pairs_written["total"]
    assert len(pairs) == m.pairs_distinct
    assert {k: len(v) for k, v in per_file.items()} == m.pairs_distinct_per_file
    rows = load_pairs(root, m)
    assert {(r["url"], r["text"]): r["n"] for r in rows} == dict(pairs)
    assert sum(m.pairs_by_kind.values()) == m.pairs_distinct
    assert m.pages["wat_readable"] == m.pages["wat_generated"] - m.pages["wat_lost_to_truncation"] - 3


def test_duplicates_within_and_across_files_and_formats(default, reread):
    root, m, _ = default
    _, _, pairs, per_file, _ = reread
    dup = m.planted_duplicates[0]
    files = {p["file"] for p in dup["pages"]}
    assert len(files) == 2 and pairs[(dup["url"], dup["text"])] >= 4  # 3 WAT pages + the WARC copy
    assert all((dup["url"], dup["text"]) in per_file[f] for f in files | set(m.warc_files))
    # Global dedup removes more than per-file dedup does.
    assert sum(m.pairs_distinct_per_file.values()) > m.pairs_distinct
    assert m.pairs_written["total"] > sum(m.pairs_distinct_per_file.values())


def test_warc_edge_cases(default, reread):
    root, m, _ = default
    texts = {t for (_, t) in reread[2]}
    assert any(re.fullmatch(r"red[a-z]+", t) for t in texts)  # '\n' deleted, words glued
    assert any(re.fullmatch(r"[a-z]+ on abench", t) for t in texts)  # CRLF deleted
    assert any(t.endswith("\ton the grass") for t in texts)  # tab kept
    assert 'Fish & chips <served> "hot"' in texts  # entities decoded
    assert any(t.startswith("Café crème and a ") for t in texts)  # windows-1252 page
    assert any(t.startswith("Grandma’s ") for t in texts) and "Crème brûlée" in texts
    assert any(re.fullmatch(r"happy [a-z]+", t) for t in texts)  # NBSP stripped
    base_urls = {u for (u, _) in reread[2] if "/assets/img/" in u}
    assert base_urls and all(u.startswith("https://static.") for u in base_urls)
    assert any(u.startswith("http://") for (u, _) in reread[2])  # legacy http sites


def test_text_mix_and_balancing_head(default):
    root, m, _ = default
    rows = load_pairs(root, m)
    vocab = set(T.VOCABULARY)
    matched = [sorted(T.spaced_tokens(r["text"]) & vocab) for r in rows]
    assert sum(bool(x) for x in matched) == m.texts_matching_vocabulary
    assert 0.35 <= 1 - m.texts_matching_vocabulary / m.pairs_distinct <= 0.5  # texts matching nothing
    counts = Counter(e for x in matched for e in x)
    assert dict(counts) == m.vocabulary_counts
    t = 30
    head = {e for e, c in counts.items() if c > t}
    assert len(head) >= 10 and sum(c < t for c in counts.values()) >= 100  # a head and a long tail
    # Closed-form expected size of every entry after MetaCLIP balancing: the head must be cut, the tail kept.
    p = {e: t / max(c, t) for e, c in counts.items()}
    keep = [1 - np.prod([1 - p[e] for e in x]) if x else 0.0 for x in matched]
    after = Counter()
    for x, k in zip(matched, keep):
        for e in x:
            after[e] += k
    ratio = [after[e] / c for e, c in counts.items() if c >= 3 * t]
    assert len(ratio) >= 8 and np.mean(ratio) < 0.8 and sum(keep) < 0.8 * sum(bool(x) for x in matched)
    assert all(after[e] == pytest.approx(c) for e, c in counts.items() if c < t)


def test_time_periods_drift(tmp_path):
    march = S.make_sample_snapshot(tmp_path, "SAMPLE-2024-10", n_wat_files=3, pages_per_file=80)
    april = S.make_sample_snapshot(tmp_path, "SAMPLE-2024-18", n_wat_files=3, pages_per_file=80)
    a, b = march.vocabulary_counts, april.vocabulary_counts
    assert sum(a.get(w, 0) for w in T.TRENDS[3]) > 3 * sum(b.get(w, 0) for w in T.TRENDS[3])
    assert sum(b.get(w, 0) for w in T.TRENDS[4]) > 3 * sum(a.get(w, 0) for w in T.TRENDS[4])
    assert march.pages == april.pages and march.image_classes != april.image_classes


# ---------------------------------------------------------------------------------------------------------------
# Images, eval split, Wikipedia inputs
# ---------------------------------------------------------------------------------------------------------------
def _feature(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255


def test_images_warc_and_learnable_classes(default, reread):
    root, m, _ = default
    pair_urls = {u for (u, _) in reread[2]}
    assert pair_urls <= set(m.image_classes)
    seen, feats, labels = set(), [], []
    with open(root / m.images["path"], "rb") as fh:
        for rec in ArchiveIterator(fh, check_digests=True):
            if rec.rec_type != "response":
                continue
            url = rec.rec_headers.get_header("WARC-Target-URI")
            body = rec.content_stream().read()
            seen.add(url)
            if url in m.images["http_error"]:
                assert rec.http_headers.get_statuscode() == "404"
                continue
            assert rec.http_headers.get_header("Content-Type") == "image/jpeg"
            if url in m.images["corrupt"]:
                with pytest.raises(OSError):
                    Image.open(io.BytesIO(body)).load()
                continue
            img = Image.open(io.BytesIO(body))
            assert img.format == "JPEG" and img.size == (64, 64)
            if m.image_classes[url]:
                feats.append(_feature(img))
                labels.append(m.image_classes[url])
    assert len(seen) == m.images["records"] and not seen & set(m.images["missing"])
    assert seen | set(m.images["missing"]) == set(m.image_classes)
    assert 0.05 <= len(m.images["missing"]) / len(m.image_classes) <= 0.15
    # Nearest class centroid on 8x8 thumbnails, scored on the held-out eval split: far above chance (10 %).
    X, y = np.stack(feats), np.array(labels)
    centroids = {c: X[y == c].mean(0) for c in m.classes}
    right = total = 0
    for c in m.classes:
        for f in sorted((root / m.eval["path"] / c).iterdir()):
            guess = min(centroids, key=lambda k: np.square(centroids[k] - _feature(Image.open(f))).sum())
            right += guess == c
            total += 1
    print(f"nearest-centroid eval accuracy {right / total:.2f}")
    assert right / total > 0.5


def test_eval_split_layout(default):
    root, m, _ = default
    d = root / "eval" / m.snapshot
    assert (
        json.loads((d / "classnames.json").read_text())
        == m.classes
        == sorted(p.name for p in d.iterdir() if p.is_dir())
    )
    templates = json.loads((d / "templates.json").read_text())
    assert "a photo of a {}." in templates and all("{}" in t for t in templates)
    for c in m.classes:
        files = sorted((d / c).glob("*.jpg"))
        assert len(files) == m.eval["per_class"] == 20
        with Image.open(files[0]) as img:
            assert img.size == (64, 64)


def test_wikipedia_inputs(default):
    root, m, _ = default
    w = m.wikipedia
    xml = bz2.decompress((root / w["dump"]).read_bytes())
    ns = {"mw": "http://www.mediawiki.org/xml/export-0.10/"}
    pages = ET.fromstring(xml).findall("mw:page", ns)
    assert len(pages) == w["pages"]
    assert sum(p.find("mw:redirect", ns) is not None for p in pages) == w["redirects"] == 1
    assert sum(p.findtext("mw:ns", namespaces=ns) != "0" for p in pages) == w["other_namespace"] == 1
    for p in pages:
        text = p.find("mw:revision/mw:text", ns)
        data = (text.text or "").encode()
        assert int(text.get("bytes")) == len(data)
        assert p.findtext("mw:revision/mw:sha1", namespaces=ns) == base36(hashlib.sha1(data).digest())
    views: Counter = Counter()
    projects, titles = set(), set()
    files = sorted((root / "wikipedia" / "pageviews").glob("pageviews-2024????-??0000.gz"))
    assert len(files) == w["pageview_files"]
    for f in files:
        for line in gzip.decompress(f.read_bytes()).decode().splitlines():
            project, title, count, size = line.split(" ")
            projects.add(project)
            titles.add(title)
            if project == "en" and int(count) >= 50 and ":" not in title:
                views[title.replace("_", " ")] += int(count)
    assert {"en", "en.m", "de"} <= projects
    assert any(":" in t for t in titles) and any("_" in t for t in titles)
    assert dict(views) == w["en_title_views_hourly_ge_50"]


def test_cli(tmp_path, capsys):
    assert (
        S.main(["--root", str(tmp_path), "--snapshot", "CLI-2024-22", "--n-wat-files", "3", "--pages-per-file", "16"])
        == 0
    )
    out = capsys.readouterr().out
    assert "snapshot CLI-2024-22" in out and "pairs written" in out
    assert (tmp_path / "manifests" / "CLI-2024-22.json").is_file()


# ---------------------------------------------------------------------------------------------------------------
# Against the real WordNet slice (only where ../shared is present)
# ---------------------------------------------------------------------------------------------------------------
def _metaclip_matches(text: str, entries: set[str], max_words: int = 8) -> set[str]:
    """Exact MetaCLIP v1 substring matching via spans between spaces (metaclip-facts.md section 2)."""
    tokens = " " + text + " "
    for c in ",.;:?!`":
        tokens = tokens.replace(c, f" {c} ")
    for c in "\t\n\r":
        tokens = tokens.replace(c, " ")
    parts = tokens.split(" ")
    return {
        " ".join(parts[i:j])
        for i in range(len(parts))
        for j in range(i + 1, min(i + max_words, len(parts)) + 1)
        if " ".join(parts[i:j]) in entries
    }


@pytest.mark.realdata
def test_vocabulary_is_wordnet_and_nomatch_texts_match_nothing(default, shared_metaclip):
    root, m, _ = default
    wordnet = set(json.loads((shared_metaclip / "wordnet_part_86654.json").read_text()))
    assert set(T.VOCABULARY) <= wordnet
    rows = load_pairs(root, m)
    for r in rows:
        if r["kind"] in ("nomatch", "brand"):
            assert not _metaclip_matches(r["text"], wordnet), r
    matched = sum(bool(_metaclip_matches(r["text"], wordnet)) for r in rows)
    assert m.texts_matching_vocabulary <= matched <= m.texts_matching_vocabulary + 0.05 * len(rows)
