"""End to end: one WAT file -> matched parquet (read, extract, dedup, match, write), ours vs a MetaCLIP-style baseline.

Competitors on the same generated WAT file (bench/gen_wat.py) and the same 500k-entry surrogate metadata
(bench/gen_metadata.py), one process, interleaved, order rotated each round, medians; automaton builds are done once
before timing (a shard run builds once per process) and reported separately:
  baseline: what MetaCLIP's v1 WAT path does, re-implemented from its rules (metaclip-facts.md sections 2-3): a line
      scan of the gunzipped text for ``WARC-Target-URI:`` then the next line starting with ``{``, ``json.loads``,
      Links with ``IMG@/src`` and a url, ``urljoin``, the three text keys cleaned, a per-image (uuid) text dedup,
      pyahocorasick matching per text (padded entries, ``(id, key)`` values, ``iter``, a set per text), texts and
      images without matches dropped, rows written to parquet. To compare outputs row for row it follows OUR pool
      rules where they differ from upstream (``<base href>``, data: URIs and non-http(s) URLs dropped).
  ours: `build.build_pool` + `stages.match_pool` (Matcher) + ``write_parquet`` of the matched rows.
Both write parquet with the assets' settings (`storage.PARQUET_OPTIONS`: zstd level 1, statistics).
Exactness: the sets of (url, text, entry ids) written by all competitors are identical.
Targets: ours >= 3x the baseline and >= 40k image-text pairs/s per core. 1 core: POLARS_MAX_THREADS=1.
The peak RSS of a full shard run (metadata, automaton build, read, match, write) is measured in a fresh process.
--lang (issue 18) adds "ours + LID": the same path with `build_pool(lang=True)` (worldwide mode: fastText language ID
per distinct text, crawl/langid.py), timed in the same rounds; target: at most 1.25x ours without it.

Usage: .venv/bin/python bench/bench_e2e.py [--mib 128] [--rounds 3] [--lang] [--record]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urljoin, urlsplit

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_matching import build_metaclip_automaton, built_matcher, upstream_spacing  # noqa: E402
from bench_wat import open_wat, wat_parser  # noqa: E402
from gen_metadata import generate_metadata  # noqa: E402

from metaclip_assets.crawl.build import build_pool  # noqa: E402
from metaclip_assets.curation.stages import match_pool  # noqa: E402
from metaclip_assets.storage import PARQUET_OPTIONS  # noqa: E402

TEXT_KEYS = ("alt", "title", "data-image-title")


def _resolve(page: str, base: str | None, src: str) -> str | None:
    if base:
        try:
            page = urljoin(page, base.strip())
        except ValueError:
            pass
    try:
        url = urljoin(page, src)
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.hostname else None


def baseline(path: Path, automaton, out: Path) -> int:
    """MetaCLIP-style WAT -> matched parquet; returns the number of image-text pairs seen (after per-image dedup)."""
    images: dict[str, list] = {}  # uuid -> [url, {text: key}] in first-seen order
    uri, want_json = None, False
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("WARC-Target-URI:"):
                uri, want_json = line.split(":", 1)[1].strip(), True
                continue
            if not (want_json and line.startswith("{")):
                continue
            want_json = False
            try:
                html = json.loads(line)["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
                links = html["Links"]
            except (KeyError, TypeError, ValueError):
                continue
            base = (html.get("Head") or {}).get("Base")
            for link in links:
                if not link.get("path", "").startswith("IMG@/src") or link.get("url") is None:
                    continue
                src = link["url"].strip()
                if not src or src[:5].lower() == "data:":
                    continue
                url = _resolve(uri, base if isinstance(base, str) else None, src)
                if url is None:
                    continue
                uuid = hashlib.sha224(url.encode()).hexdigest()[:24]
                entry = images.setdefault(uuid, [url, {}])
                for key in TEXT_KEYS:
                    text = link.get(key)
                    if isinstance(text, str):
                        text = text.replace("\n", " ").replace("\r", " ").strip()
                        if text and text not in entry[1]:
                            entry[1][text] = key
    cols = {"uuid": [], "url": [], "text": [], "text_key": [], "entry_ids": []}
    pairs = 0
    for uuid, (url, texts) in images.items():
        for text, key in texts.items():
            pairs += 1
            matched = set()
            for _end, (idx, _key) in automaton.iter(upstream_spacing(text)):
                matched.add(idx)
            if matched:
                cols["uuid"].append(uuid)
                cols["url"].append(url)
                cols["text"].append(text)
                cols["text_key"].append(key)
                cols["entry_ids"].append(sorted(matched))
    pl.DataFrame(
        cols,
        schema={"uuid": pl.Utf8, "url": pl.Utf8, "text": pl.Utf8, "text_key": pl.Utf8, "entry_ids": pl.List(pl.UInt32)},
    ).write_parquet(out, **PARQUET_OPTIONS)
    return pairs


def ours(path: Path, matcher, out: Path, lang: bool = False) -> int:
    pool, _stats = build_pool([(path, path.name)], snapshot="CC-MAIN-2024-22", lang=lang)
    matched, _ = match_pool(pool, matcher)
    matched.write_parquet(out, **PARQUET_OPTIONS)
    return pool.height


def triples(parquet: Path) -> set:
    df = pl.read_parquet(parquet, columns=["url", "text", "entry_ids"])
    return set(zip(df["url"].to_list(), df["text"].to_list(), map(tuple, df["entry_ids"].to_list())))


SHARD_CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import _common as C
from gen_metadata import generate_metadata
from metaclip_assets.curation.matching import Matcher
from metaclip_assets.crawl.build import build_pool
from metaclip_assets.curation.stages import match_pool
from metaclip_assets.storage import PARQUET_OPTIONS
from pathlib import Path
wat, out, entries = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
md, _ = generate_metadata(entries)
t0 = time.perf_counter()
m = Matcher(md)
pool, _ = build_pool([(wat, wat.name)], snapshot="CC-MAIN-2024-22")
pool.write_parquet(out + ".pool.parquet", **PARQUET_OPTIONS)
matched, _ = match_pool(pool, m)
matched.write_parquet(out, **PARQUET_OPTIONS)
print(json.dumps(dict(peak=C.peak_rss_mb(), seconds=time.perf_counter() - t0, pairs=pool.height)))
"""


def shard_rss(path: Path, entries: int, tmp: Path) -> dict:
    return C.run_child(SHARD_CHILD, path, tmp / "shard.parquet", entries)


def main(argv: list[str] | None = None) -> None:
    ap = wat_parser(__doc__)
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--lang", action="store_true", help="also time ours with language ID (build_pool(lang=True))")
    args = ap.parse_args(argv)
    info, path = open_wat(args)
    metadata, _ = generate_metadata(args.entries, args.seed)
    builds = {}
    automaton, builds["baseline"] = C.timed(build_metaclip_automaton, metadata)
    # the token tables are built lazily: build them here, as a shard run does once per process
    matcher, builds["ours"] = C.timed(built_matcher, metadata)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        outs = {k: tmp / f"{k}.parquet" for k in ("baseline", "ours", "lang")}
        n_base = baseline(path, automaton, outs["baseline"])
        n_ours = ours(path, matcher, outs["ours"])
        ref = triples(outs["ours"])
        assert triples(outs["baseline"]) == ref, "baseline and ours wrote different (url, text, entry ids)"
        assert n_base == n_ours, (n_base, n_ours)
        if args.lang:
            assert ours(path, matcher, outs["lang"], lang=True) == n_ours
            assert triples(outs["lang"]) == ref, "language ID changed the matched rows"
            langs = pl.read_parquet(outs["lang"], columns=["text", "lang"])
        print(f"exactness: {n_ours:,} image-text pairs read, {len(ref):,} matched rows identical in all outputs")

        competitors = {
            "baseline: line scan + json + pyahocorasick": lambda: baseline(path, automaton, outs["baseline"]),
            "ours: build_pool + match_pool (Matcher) + parquet": lambda: ours(path, matcher, outs["ours"]),
        }
        if args.lang:
            competitors["ours + LID: build_pool(lang=True) + match_pool + parquet"] = lambda: ours(
                path, matcher, outs["lang"], lang=True
            )
        times, loads = C.interleaved(competitors, args.rounds)
        rss = None if args.no_rss else shard_rss(path, args.entries, tmp)
    med = {k: C.median(v) for k, v in times.items()}
    cpu = {k: C.median(v) for k, v in times.cpu.items()}
    b = list(med)[0]
    rows = [
        [
            k,
            f"{v:.2f}",
            f"{cpu[k]:.2f}",
            C.rate(n_ours, v),
            C.rate(n_ours, cpu[k]),
            f"{med[b] / v:.2f}x",
            f"{cpu[b] / cpu[k]:.2f}x",
        ]
        for k, v in med.items()
    ]
    table = C.md_table(
        "competitor|median wall s|median CPU s|pairs/s (wall)|pairs/s per CPU-s|vs baseline (wall)|vs baseline (CPU)",
        rows,
    )
    o = list(med)[1]
    body = (
        f"WAT {args.mib:g} MiB raw / {path.stat().st_size / 2**20:.1f} MiB gzipped (bench/gen_wat.py seed "
        f"{args.seed}); {n_ours:,} image-text pairs, {len(ref):,} matched; {len(metadata):,} entries; "
        f"{args.rounds} rounds; outputs identical.\n\n{table}\n\n"
        f"Builds (once per shard process, not timed above): pyahocorasick {builds['baseline']:.1f} s, ours "
        f"{builds['ours']:.1f} s (token tables).\n\n"
        f"Targets: ours >= 3x baseline: {med[b] / med[o]:.2f}x wall, {cpu[b] / cpu[o]:.2f}x CPU "
        f"({'met' if med[b] / med[o] >= 3 else 'MISSED'}); >= 40k pairs/s/core: {n_ours / cpu[o] / 1e3:.1f}k "
        f"per CPU-s, {n_ours / med[o] / 1e3:.1f}k per wall-s ({'met' if n_ours / med[o] >= 40e3 else 'MISSED'}).\n"
    )
    if args.lang:
        lid = list(med)[2]
        top = langs["lang"].value_counts(sort=True).head(6).iter_rows()
        body += (
            f"\nLanguage ID (issue 18): ours + LID costs {med[lid] / med[o]:.2f}x ours wall, "
            f"{cpu[lid] / cpu[o]:.2f}x CPU (target <= 1.25x: {'met' if med[lid] / med[o] <= 1.25 else 'MISSED'}); "
            f"{langs['text'].n_unique():,} distinct texts among the {langs.height:,} matched rows; matched rows by lang: "
            f"{', '.join(f'{k} {v:,}' for k, v in top)}.\n"
        )
    if rss:
        body += (
            f"\nFull shard run in a fresh process (metadata + Matcher build + build_pool + pool parquet + "
            f"match_pool + matched parquet): peak RSS {rss['peak']:.0f} MB, {rss['seconds']:.1f} s, "
            f"{rss['pairs']:,} pairs.\n"
        )
    title = "End to end WAT -> matched parquet" + (", with and without language ID (issue 18)" if args.lang else "")
    C.report(title, info, body, loads, args.record)


if __name__ == "__main__":
    main()
