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

Modules: warc_writer (the one WAT/WARC writer, shared with bench/ and the tests), texts (vocabulary, captions),
web (sites, image pool, pages), captures (a page as HTML, WARC records and WAT payloads), images (drawings, image
WARC, eval split), wikipedia (MediaWiki export, pageviews), builder (file layout), manifest (what a reader must find).

Alt texts mix Zipf-distributed captions built from WordNet words (so balancing has a head to cut) with ~40 %
texts that match no metadata entry (camera file names, hashes, non-Latin scripts), messy whitespace/punctuation
variants and planted duplicates. Images are 64x64 JPEGs drawn per visual class, so a tiny CLIP can learn them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metaclip_assets.sample.builder import Builder
from metaclip_assets.sample.images import draw_image
from metaclip_assets.sample.manifest import SampleManifest, load_manifest, manifest_path, write_manifest
from metaclip_assets.sample.texts import CLASSES

__all__ = ["CLASSES", "SampleManifest", "draw_image", "load_manifest", "main", "make_sample_snapshot"]


def make_sample_snapshot(
    root: Path, snapshot: str = "SAMPLE-2024-10", *, seed: int = 0, n_wat_files: int = 8, pages_per_file: int = 150
) -> SampleManifest:
    """Write the sample snapshot under `root` (see the module docstring) and return its manifest.

    Same (snapshot, seed, sizes) => same bytes. The snapshot name also feeds the RNG, so a second snapshot
    (e.g. "SAMPLE-2024-18") gets a drifted vocabulary and class mix even with the same seed.
    """
    root = Path(root)
    manifest = Builder(root, snapshot, seed, n_wat_files, pages_per_file).build()
    write_manifest(root, manifest)
    return manifest


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
        if not f["path"].startswith(m.eval["path"]):
            print(f"  {f['path']}  {f['bytes']} bytes")
    print(f"  {m.eval['path']}: {len(m.classes)} classes x {m.eval['per_class']} images")
    print(f"pages {m.pages}")
    print(f"image links {m.image_links}")
    print(f"pairs written {m.pairs_written}, distinct {m.pairs_distinct}, by kind {m.pairs_by_kind}")
    print(f"expected skips {m.expected_skips}")
    print(
        f"images {m.images['records']} records / {m.images['referenced']} referenced, "
        f"{len(m.images['missing'])} missing"
    )
    print(f"manifest {manifest_path(args.root, m.snapshot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
