"""Reading CommonCrawl files into the pool: `read_source_file` (one WAT or WARC file) and `build_pool` (many files,
deduplicated). The only module of `crawl/` that knows both format readers."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from metaclip_assets.crawl import langid, warc_html, wat
from metaclip_assets.crawl.pool import LANG_SCHEMA, PROGRESS_EVERY, ProgressFn, ReadStats, empty_pool

# --- entry points ----------------------------------------------------------------------------


def read_source_file(
    path: Path,
    *,
    snapshot: str,
    source_name: str,
    progress: ProgressFn | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> tuple[pl.DataFrame, ReadStats]:
    """Read one CC file into pool rows, dispatching on its name: *.wat.gz or *.warc.gz.

    Rows come in file order and are not deduplicated (build_pool does that across files).
    """
    path = Path(path)
    name = path.name
    kwargs = dict(snapshot=snapshot, source_name=source_name, progress=progress, progress_every=progress_every)
    if name.endswith(".wat.gz"):  # checked first: CC names WAT files *.warc.wat.gz
        return wat.read_wat(path, **kwargs)
    if name.endswith(".warc.gz"):
        return warc_html.read_warc_html(path, **kwargs)
    raise ValueError(
        f"cannot read {path}: expected a gzipped WAT (*.wat.gz) or WARC (*.warc.gz) file; "
        "WET files (*.wet.gz), uncompressed and other formats are not supported"
    )


def build_pool(
    files: list[tuple[Path, str]],
    *,
    snapshot: str,
    progress: ProgressFn | None = None,
    progress_every: int = PROGRESS_EVERY,
    lang: bool = False,
) -> tuple[pl.DataFrame, ReadStats]:
    """Read (path, source_name) files into one pool without duplicate (url, text) pairs.

    Files are read in source_name order, so the row order and which copy of a duplicate is kept
    (the first by (source_file, record_offset)) do not depend on the order of `files`.
    Unlike MetaCLIP (dedup per image uuid within one file) the dedup here spans all files.
    `progress`, if given, receives running totals over the files read so far.
    `lang=True` (worldwide mode) appends a `lang` column (`with_lang`); the default leaves the v1 pool untouched.
    """
    names = [name for _, name in files]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"source names must be unique, repeated: {dupes}")
    total = ReadStats()
    frames = []
    for path, name in sorted(files, key=lambda f: f[1]):
        file_progress = None
        if progress is not None:
            done = total.copy()  # bind the totals so far; the callback adds the current file
            file_progress = lambda st, done=done: progress(done.copy().merge(st))  # noqa: E731
        df, stats = read_source_file(
            path, snapshot=snapshot, source_name=name, progress=file_progress, progress_every=progress_every
        )
        frames.append(df)
        total.merge(stats)
    pool = pl.concat(frames, how="vertical") if frames else empty_pool()
    before = pool.height
    # rows are already in (source_file, record_offset, position in record) order: keep the first
    pool = pool.unique(subset=["url", "text"], keep="first", maintain_order=True)
    total.duplicates_dropped += before - pool.height
    total.pairs = pool.height
    return (with_lang(pool) if lang else pool), total


def with_lang(pool: pl.DataFrame) -> pl.DataFrame:
    """`pool` with a `lang` column last (LANG_SCHEMA): `langid.detect` of its `text`, each distinct text once."""
    texts = pool["text"].unique(maintain_order=True)  # alt-texts repeat ("logo", "image"): LID runs once per text
    codes = pl.Series("lang", langid.detect(texts.to_list()), dtype=LANG_SCHEMA["lang"])
    return pool.with_columns(pl.col("text").replace_strict(texts, codes, return_dtype=codes.dtype).alias("lang"))
