"""Lays out one sample snapshot on disk: WAT files with planted bad records, the HTML WARC, images, eval split and
Wikipedia inputs, and counts what a correct reader must find (the manifest).

Separate RNG streams keep e.g. the eval split independent of the page count; record ids come from one counter, so
the order of writes below is part of the output.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from metaclip_assets import layout
from metaclip_assets.sample import warc_writer as W
from metaclip_assets.sample.captures import capture_records, render_html, wat_payloads
from metaclip_assets.sample.images import write_eval, write_image_warc
from metaclip_assets.sample.manifest import GENERATOR_VERSION, SampleManifest
from metaclip_assets.sample.texts import CLASSES, VOCABULARY, Captions, clean_warc_text, clean_wat_text, spaced_tokens
from metaclip_assets.sample.web import Img, Page, Text, Web
from metaclip_assets.sample.wikipedia import write_wikipedia


class Builder:
    """Builds one snapshot under `root`; `build()` writes every file and returns the manifest."""

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
        self.ids = W.RecordIds(f"{seed}/{snapshot}")
        # CommonCrawl ids are YEAR-WEEK; the crawl starts on that ISO week's Monday.
        m = re.search(r"(\d{4})-(\d{1,2})$", snapshot)
        try:
            start = datetime.fromisocalendar(int(m.group(1)), int(m.group(2)), 1) if m else None
        except ValueError:
            start = None
        has_date = start is not None
        start = start or datetime(2024, 1, 1)
        self.t0 = start.replace(tzinfo=UTC) + timedelta(hours=2, minutes=31, seconds=22)
        seg = f"{self.t0:%Y%m%d%H%M%S}-{self.t0 + timedelta(hours=3):%Y%m%d%H%M%S}"
        self.prefix = f"CC-MAIN-{seg}"
        self.crawl_dir = root / layout.crawl_dir(snapshot)
        self.pairs: dict[tuple[str, str], dict] = {}  # (url, text) -> {kind, n}
        self.per_file: dict[str, set] = {}
        self.written = {"wat": 0, "warc": 0}
        self.links = {"wat": 0, "warc": 0, "bad_url": 0, "no_text": 0, "without_src": 0}
        self.planted: list[dict] = []
        self.planted_dups: list[dict] = []
        self._wat_stats: dict[str, dict] = {}
        self._warc_stats: dict[str, dict] = {}
        self.texts = Captions(self.rng, self.t0.month if has_date else None)

    def _wat_name(self, idx: int) -> str:
        return f"{self.prefix}-{idx:05d}.warc.wat.gz"

    # -- WAT ---------------------------------------------------------------------------------------------------
    def _write_wat(self, idx: int, pages: list[Page], faults: dict[int, str], cut_page: int | None) -> str:
        name = self._wat_name(idx)
        warc_name = f"{self.prefix}-{idx:05d}.warc.gz"
        extracted = self.t0 + timedelta(days=13, hours=idx)
        fields = [
            ("Software-Info", "ia-web-commons.1.1.10-SNAPSHOT-20240513074037"),
            ("Extracted-Date", W.http_date(extracted)),
            ("ip", "10.67.67.159"),
            ("hostname", "ip-10-67-67-159.ec2.internal"),
            ("format", "WARC File Format 1.0"),
            ("conformsTo", "http://bibnum.bnf.fr/WARC/WARC_ISO_28500_version1_latestdraft.pdf"),
        ]
        info = W.warcinfo_member(name, W.iso_date(extracted), self.ids(), fields, wat=True)
        chunks, pos, offset = [info], len(info), 0
        warcinfo_id = self.ids()
        n_records = 1
        for k, page in enumerate(pages):
            payloads, offset = wat_payloads(page, self.ids, warc_name, offset, warcinfo_id)
            for kind, refers, obj in payloads:
                fault = faults.get(k) if kind == "response" else None
                if fault == "missing_field":
                    del obj["Envelope"]["Payload-Metadata"]
                data = W.json_text(obj).encode("utf-8")
                if fault == "bad_json":
                    data = data[: len(data) * 2 // 3]  # a writer that died mid-record
                elif fault == "bad_encoding":  # latin-1 bytes leaking into the UTF-8 JSON
                    data = data.replace(b'"Title":"', b'"Title":"\xe9t\xe9 ', 1)
                date = W.iso_date(extracted + timedelta(seconds=k))
                member = W.wat_member(page.url, date, self.ids(), refers, data)
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
        W.write_members(self.crawl_dir / name, chunks)
        return name

    # -- expected pairs ----------------------------------------------------------------------------------------
    def _collect(self, page: Page, file: str, fmt: str):
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
    def _write_warc(self, pages: list[Page]) -> str:
        name = f"{self.prefix}-{self.n_wat:05d}.warc.gz"
        info_id = self.ids()
        fields = [
            ("isPartOf", self.snapshot),
            ("publisher", "Common Crawl"),
            ("description", f"Synthetic sample crawl {self.snapshot} (metaclip-assets)"),
            ("operator", "metaclip-assets sample generator"),
            ("hostname", "ip-10-0-0-1"),
            ("software", "Apache Nutch 1.19 (modified, https://github.com/commoncrawl/nutch/)"),
            ("format", "WARC File Format 1.1"),
            ("conformsTo", "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/"),
        ]
        chunks = [W.warcinfo_member(name, W.iso_date(self.t0), info_id, fields, wat=False)]
        n = 1
        for page in pages:
            body = render_html(page).encode(page.charset)
            records, _ = capture_records(page, self.ids, info_id, body)
            for _, _, block, hdr in records:
                chunks.append(W.warc_member(hdr, block))
                n += 1
            self._collect(page, name, "warc")
        # A PDF capture: a response record the HTML reader must skip (not_html).
        pdf_site = pages[0].site
        pdf = Page(f"https://{pdf_site.host}/files/brochure.pdf", pdf_site, "", [], self.t0 + timedelta(hours=3))
        body = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        records, _ = capture_records(pdf, self.ids, info_id, body, "application/pdf")
        pos = sum(len(c) for c in chunks)
        for kind, _, block, hdr in records:
            if kind == "response":
                self.planted.append({"reason": "not_html", "file": name, "offset": pos, "page_url": pdf.url})
            member = W.warc_member(hdr, block)
            chunks.append(member)
            pos += len(member)
            n += 1
        self._warc_stats[name] = {"records_written": n, "records_readable": n}
        return self._finish_file(name, chunks)

    # -- driver ------------------------------------------------------------------------------------------------
    def build(self) -> SampleManifest:
        self.crawl_dir.mkdir(parents=True, exist_ok=True)
        for old in self.crawl_dir.glob("*.gz"):  # regenerating must not leave files of a larger run behind
            old.unlink()
        web = Web(self.texts, self.n_wat * self.ppf)
        files = web.crawl(self.n_wat, self.ppf, self.t0)
        dup_url, dup_text, copies = web.plant_duplicates(files)
        self.planted_dups.append(
            {
                "url": dup_url,
                "text": dup_text,
                "pages": [{"file": self._wat_name(f), "page_url": page.url} for f, page in copies],
            }
        )
        # urljoin raises "Invalid IPv6 URL" on this src; the page's other links stay good.
        files[0][3].imgs.append(Img("http://[::1/images/dog.jpg", None, [Text("alt", "dog on the beach", "caption")]))
        faults = {0: {7: "bad_json"}, 1: {9: "bad_encoding"}, 2: {11: "missing_field"}}
        cut_page = max(12, self.ppf * 3 // 4)
        wat_names = [
            self._write_wat(f, files[f], faults.get(f, {}), cut_page if f == self.n_wat - 1 else None)
            for f in range(self.n_wat)
        ]
        warc_pages = web.warc_pages(self.t0, (dup_url, dup_text))
        warc_name = self._write_warc(warc_pages)
        when = self.t0 + timedelta(days=20)
        images = write_image_warc(self.root, self.snapshot, web.image_classes, self.img_rng, self.ids, when)
        evals = write_eval(self.root, self.snapshot, self.eval_rng, 20)
        wiki = write_wikipedia(self.root)
        return self._manifest(wat_names, warc_name, warc_pages, cut_page, web.image_classes, images, evals, wiki)

    def _manifest(
        self, wat_names, warc_name, warc_pages, cut_page, image_classes, images, evals, wiki
    ) -> SampleManifest:
        root = self.root
        pairs_path = root / layout.sample_manifest_key(self.snapshot, ".pairs.jsonl.gz")
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
        rows = sorted(self.pairs.items())
        lines = "".join(W.json_text({"url": u, "text": t, "kind": v["kind"], "n": v["n"]}) + "\n" for (u, t), v in rows)
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
                root / layout.image_warc_dir(self.snapshot),
                root / layout.eval_set_dir(self.snapshot),
                root / layout.WIKIPEDIA_DIR,
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
            crawl_dir=layout.crawl_dir(self.snapshot),
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
            image_classes=image_classes,
            images=images,
            eval=evals,
            wikipedia=wiki,
            pairs_file=pairs_path.relative_to(root).as_posix(),
        )
