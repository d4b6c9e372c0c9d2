"""MetaCLIP 2 ("worldwide") matching and balancing per language: pure functions, no storage, no Dagster.

Rules, from facebookresearch/MetaCLIP at f47f784 (metaclip-facts.md section 6; no upstream code copied):

Matching (``metaclip/curation/substr_matching.py``):
  * the text is normalised by v1's `spacing` unchanged (lines 112-121);
  * an entry gets a space on its left only if its FIRST character is not CJK-like, and on its right only if its
    LAST character is not CJK-like (``get_spaced_metadata``, lines 124-133); it matches iff that padded form is a
    substring of the spaced text (pyahocorasick ``iter``, lines 136-148: overlapping, each id once);
  * CJK-like (``is_cjk_or_similar``, lines 71-101): the 11 CJK ideograph/radical ranges, Thai, Lao, Myanmar, Khmer,
    Tibetan, `string.punctuation` and 25 CJK punctuation marks (lines 5-34, 67-68; ``metadata/build_metadata.py``
    lines 90-92 lists 26 for its pure-punctuation filter, ``¿`` the extra one, not used in matching). Hiragana,
    Katakana (U+3040-30FF, including the prolonged sound mark U+30FC), Hangul and full-width Latin are NOT in it, as
    released: a Katakana entry is padded like a Latin one, so ``タワー`` does not match inside ``東京タワー``;
  * every language's automaton is built with this rule, English included (``align_lid_to_wiki.py`` lines 75-76),
    so an entry whose edge is ASCII punctuation matches differently from v1 (``C++`` inside ``C+++``, ``'hood``
    inside ``the'hood``); entries with no CJK-like edge are padded on both sides, exactly v1's rule;
  * a text is matched only against the metadata of its own (LID) language (``substr_match(lang_id, ...)``); a text
    whose language has no metadata matches nothing. Upstream maps unmapped LID codes to ``other`` and builds an
    ``other`` metadata from the Wikipedia languages no LID code maps to (``align_lid_to_wiki.py`` lines 23-43):
    pass an ``"other"`` list to get that behaviour.

Balancing (``metaclip/curation/curate.py``):
  * counts per language are v1's counts: every matched TEXT of an image adds 1 per matched entry
    (``count_per_shard``, lines 141-150; texts without matches are dropped, lines 127-129);
  * English tail proportion ``p = sum(count[count < t_en]) / sum(count)`` (``t_to_p``, lines 56-66; ``global_count``,
    line 174, ``t_en = 170000``); English keeps ``t = t_en``; every other language takes ``t`` = the count, in its
    ascending sorted counts, whose cumulative share (that entry included) is closest to p, first on ties
    (``p_to_t``, lines 37-53; lines 177-181); ``p[e] = t / max(count[e], t)`` stored as float32
    (``count_to_prob``, lines 69-82; line 184);
  * curation: per image, ONE of its matched texts chosen at random, kept with probability
    ``1 - prod(1 - p[e])`` over that text's entries in its language (``curate``, lines 201-216), one draw.

Deviations (each deliberate; the released ``curate()`` does not run: ``random`` is not imported, ``self.args.t`` is
undefined and probabilities are read from ``per_lang_t/`` while ``global_count`` writes ``per_lang_prob/``):
  * draws are hashes of (pair id, seed), not ``random.random()``, so results do not depend on order or sharding;
    the chosen text is the image's matched text with the smallest choice hash, a uniform choice that is the same
    however the image's texts are split over shards or buckets (upstream chooses per uuid within one JSON shard);
    kept iff ``u < P`` (upstream ``not P < u``: differs only on a measure-zero tie);
  * `t_for_tail_share` only considers matched entries (count > 0) as candidates. Upstream also considers the
    zero counts; that changes the result only when a zero wins the argmin, where upstream returns t = 0 and every
    probability becomes 0 (or NaN): the whole language would be dropped. Otherwise the two are identical;
  * a language without matches gets ``t = inf`` (all probabilities 1: nothing to balance); upstream never has one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from itertools import chain
from operator import itemgetter

import ahocorasick_rs
import numpy as np
import polars as pl

from metaclip_assets.curation.balancing import (
    entry_probabilities,
    keep_probability,
    pair_entry_uniforms,
    tail_share,
)
from metaclip_assets.curation.datacard import _md_table
from metaclip_assets.curation.matching import _PUNCT, _WS, Matcher, _encode, _spaced_bytes
from metaclip_assets.metadata.worldwide import CJK_LIKE_RANGES

__all__ = [
    "DEFAULT_T_EN",
    "ENGLISH",
    "OTHER",
    "CJK_PUNCTUATION",
    "is_cjk_like",
    "pad_entry",
    "worldwide_fingerprint",
    "language_ranges",
    "split_counts",
    "WorldwideMatcher",
    "t_for_tail_share",
    "language_thresholds",
    "language_probabilities",
    "choice_scores",
    "image_choices",
    "merge_image_choices",
    "one_text_per_image",
    "keep_chosen",
    "WorldwideBalanceStats",
    "balance_worldwide",
    "count_by_language",
    "language_rows",
    "language_table_markdown",
    "pairs_by_language_png",
]

DEFAULT_T_EN = 170_000.0  # MetaCLIP 2's English threshold (curate.py global_count(t_en=170000))
ENGLISH = "en"  # the reference language whose tail share at t_en sets p
OTHER = "other"  # the language code of texts whose language is unknown or has no metadata

# The 25 marks of substr_matching.py lines 5-34, in upstream order: ，。、；：？！“”‘’（）【】《》〈〉「」『』～—
CJK_PUNCTUATION = frozenset(
    "\uff0c\u3002\u3001\uff1b\uff1a\uff1f\uff01\u201c\u201d\u2018\u2019\uff08\uff09"
    "\u3010\u3011\u300a\u300b\u3008\u3009\u300c\u300d\u300e\u300f\uff5e\u2014"
)
_PUNCTUATION = frozenset(string.punctuation) | CJK_PUNCTUATION
# The CJK-like code point ranges (is_cjk_or_similar, lines 74-95) have one home, metadata/worldwide.py, whose
# tokenizer uses them too (its punctuation set differs: the pure-punctuation filter adds ``¿``).
_CJK_LIKE_RANGES = CJK_LIKE_RANGES
# Pseudo entry ids for the two per-pair draws: v1 entry ids are < 2**32, so these draws are independent of every
# per-entry draw of `balance_pairs` with the same seed.
_CHOICE_KEY = 2**32
_KEEP_KEY = 2**32 + 1
_first = itemgetter(0)
# `spacing`'s replacements on UTF-8 bytes (all ASCII, so byte replaces equal character replaces), in its order.
_BYTE_SPACING = tuple((c.encode(), f" {c} ".encode()) for c in _PUNCT) + tuple((c.encode(), b" ") for c in _WS)


def is_cjk_like(char: str) -> bool:
    """MetaCLIP 2's ``is_cjk_or_similar``: True where an entry edge gets no space padding."""
    cp = ord(char)
    return char in _PUNCTUATION or any(lo <= cp <= hi for lo, hi in _CJK_LIKE_RANGES)


def pad_entry(entry: str) -> str:
    """The pattern an entry matches as: ``" "`` added on each side whose edge character is not CJK-like."""
    if not entry:
        raise ValueError("empty metadata entry: it has no edge characters to pad (and would match everywhere)")
    left = "" if is_cjk_like(entry[0]) else " "
    right = "" if is_cjk_like(entry[-1]) else " "
    return left + entry + right


def worldwide_fingerprint(metadata: Mapping[str, Sequence[str]]) -> str:
    """sha256 hex of the per-language metadata as JSON (languages sorted): changes with any entry or language."""
    payload = json.dumps({lang: list(metadata[lang]) for lang in sorted(metadata)})
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


def language_ranges(metadata: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    """``{lang: (start, stop)}`` of each language's global entry ids: languages concatenated in sorted order."""
    ranges, start = {}, 0
    for lang in sorted(metadata):
        ranges[lang] = (start, start + len(metadata[lang]))
        start += len(metadata[lang])
    return ranges


def split_counts(counts: np.ndarray, ranges: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """Per-language views of a global count (or probability) array."""
    total = max((stop for _, stop in ranges.values()), default=0)
    if len(counts) != total:
        raise ValueError(f"{len(counts)} counts but the language ranges cover {total} entries")
    return {lang: counts[a:b] for lang, (a, b) in ranges.items()}


# ---- matching ----------------------------------------------------------------------------------------------------


class _LanguageEngine:
    """One language's matcher: v1's `Matcher` for entries padded on both sides (v1's rule, v1's fast engine), an
    automaton over the padded patterns of the rest (entries with a CJK-like edge)."""

    def __init__(self, entries: Sequence[str], start: int):
        both, edge = [], []  # local ids of each kind
        for i, e in enumerate(entries):
            if not isinstance(e, str):
                raise TypeError(f"metadata entry {i} is {type(e).__name__}, not str")
            (edge if is_cjk_like(e[0]) or is_cjk_like(e[-1]) else both).append(i)
        self.plain = Matcher([entries[i] for i in both]) if both else None
        self.plain_ids = np.asarray(both, dtype=np.uint32) + np.uint32(start)
        # ahocorasick-rs reports every index of a duplicated pattern, so duplicate entries need no remapping
        self.edge = (
            ahocorasick_rs.BytesAhoCorasick(
                [_encode(pad_entry(entries[i])) for i in edge], matchkind=ahocorasick_rs.MatchKind.Standard
            )
            if edge
            else None
        )
        self.edge_ids = np.asarray(edge, dtype=np.uint32) + np.uint32(start)
        self.edge_nul = any("\x00" in entries[i] for i in edge)  # such patterns could join two texts

    def hits(self, texts: Sequence[str], threads: int) -> tuple[np.ndarray, np.ndarray]:
        """(row into `texts`, global entry id) of every match, unsorted, possibly repeated."""
        rows, ids = [], []
        if self.plain is not None:
            off, local = self.plain.match_batch(texts, threads)
            rows.append(np.repeat(np.arange(len(texts), dtype=np.int64), np.diff(off)))
            ids.append(self.plain_ids[local])
        if self.edge is not None and len(texts):
            r, local = self._edge_hits(texts)
            rows.append(r)
            ids.append(self.edge_ids[local])
        return _concat_or_empty(rows, np.int64), _concat_or_empty(ids, np.uint32)

    def _edge_hits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row, edge pattern index) of every edge-entry match. One automaton pass over all spaced texts joined by
        NUL (`spacing` commutes with concatenation): no pattern holds a NUL, so no match crosses a text boundary
        and a match's text is the number of NULs before it. Per text where a text itself holds a NUL."""
        big = " " + " \x00 ".join(texts) + " "
        if self.edge_nul or big.count("\x00") != len(texts) - 1:
            found = list(map(partial(self.edge.find_matches_as_indexes, overlapping=True), _spaced_bytes(texts)))
            per_text = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
            local = np.fromiter(map(_first, chain.from_iterable(found)), dtype=np.int64, count=int(per_text.sum()))
            return np.repeat(np.arange(len(texts), dtype=np.int64), per_text), local
        buf = _encode(big)
        for char, spaced in _BYTE_SPACING:  # bytes.replace is ~10x str.replace on a non-ASCII string
            if char in buf:
                buf = buf.replace(char, spaced)
        found = self.edge.find_matches_as_indexes(buf, overlapping=True)
        hits = np.array(found, dtype=np.int64).reshape(-1, 3)  # (pattern, start, end)
        nul = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 0)
        return np.searchsorted(nul, hits[:, 1]).astype(np.int64), hits[:, 0]


def _concat_or_empty(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


class WorldwideMatcher:
    """MetaCLIP 2 matching against per-language metadata; ids index one global entry list.

    Global ids: the languages' lists concatenated in sorted language order (`ranges`), so ``entries[g]`` is the
    string and `entry_index` maps (lang, local id) to g. A language's engine is built on its first text.
    """

    def __init__(self, metadata: Mapping[str, Sequence[str]]):
        self._metadata = {lang: tuple(metadata[lang]) for lang in sorted(metadata)}
        for lang, entries in self._metadata.items():
            if not isinstance(lang, str) or not lang:
                raise ValueError(f"language codes must be non-empty strings, got {lang!r}")
            if "" in entries:  # checked now: the engines are built later, on a language's first text
                raise ValueError(f"metadata entry {entries.index('')} of {lang!r} is empty: drop it from the metadata")
        self.ranges = language_ranges(self._metadata)
        if sum(len(v) for v in self._metadata.values()) > 2**32:
            raise ValueError("more than 2**32 entries in all do not fit uint32 entry ids")
        self._engines: dict[str, _LanguageEngine] = {}

    def __len__(self) -> int:
        return max((b for _, b in self.ranges.values()), default=0)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._metadata)

    @cached_property
    def entries(self) -> tuple[str, ...]:
        """The global entry list (global id -> string)."""
        return tuple(chain.from_iterable(self._metadata.values()))

    @cached_property
    def fingerprint(self) -> str:
        """`worldwide_fingerprint` of the metadata (computed on first use)."""
        return worldwide_fingerprint(self._metadata)

    def entry_index(self, lang: str, local_id: int) -> int:
        """Global id of entry `local_id` of `lang`."""
        start, stop = self.ranges[lang]
        if not 0 <= local_id < stop - start:
            raise IndexError(f"{lang!r} has {stop - start} entries, no entry {local_id}")
        return start + local_id

    def entry_language(self, global_ids: np.ndarray) -> np.ndarray:
        """The language code of each global id (object array)."""
        langs = np.array(list(self.ranges), dtype=object)
        starts = np.array([a for a, _ in self.ranges.values()], dtype=np.int64)
        return langs[np.searchsorted(starts, np.asarray(global_ids, dtype=np.int64), side="right") - 1]

    def _engine(self, lang: str) -> _LanguageEngine:
        if lang not in self._engines:
            self._engines[lang] = _LanguageEngine(self._metadata[lang], self.ranges[lang][0])
        return self._engines[lang]

    def match(self, text: str, lang: str) -> list[int]:
        """Sorted global ids of `lang`'s entries that match `text` (none if `lang` has no metadata)."""
        return self.match_batch([text], [lang])[1].tolist()

    def match_batch(
        self, texts: Sequence[str], langs: Sequence[str | None] | pl.Series, threads: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(offsets int64 (n+1,), global entry ids uint32)`` as `Matcher.match_batch`: text k against the
        metadata of ``langs[k]`` only, ids ascending and each once. ``threads`` goes to v1's engine."""
        texts = texts.to_list() if isinstance(texts, pl.Series) else texts
        n = len(texts)
        if len(langs) != n:
            raise ValueError(f"{n} texts but {len(langs)} language codes")
        langs = langs.cast(pl.String) if isinstance(langs, pl.Series) else pl.Series(langs, dtype=pl.String)
        frame = pl.DataFrame({"lang": langs}).with_row_index("row")
        groups = frame.filter(pl.col("lang").is_in(list(self._metadata))).group_by("lang").agg("row")
        rows_all, ids_all = [], []
        for lang, rows in zip(groups["lang"].to_list(), groups["row"].to_list()):
            rows = np.asarray(rows, dtype=np.int64)
            sub = texts if len(rows) == n else [texts[i] for i in rows.tolist()]  # one language: no copy
            r, g = self._engine(lang).hits(sub, threads)
            rows_all.append(rows[r])
            ids_all.append(g)
        key = (_concat_or_empty(rows_all, np.uint64) << np.uint64(32)) | _concat_or_empty(ids_all, np.uint64)
        key.sort()  # by (text, id); then each pair once (np.unique is hash-based in numpy 2.4, slower)
        key = key[np.concatenate(([True], key[1:] != key[:-1]))] if len(key) else key
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount((key >> np.uint64(32)).astype(np.intp), minlength=n), out=offsets[1:])
        return offsets, (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# ---- thresholds and probabilities ------------------------------------------------------------------------------


def t_for_tail_share(counts: np.ndarray, p: float) -> float:
    """MetaCLIP 2's ``p_to_t``: the count, in ascending sorted (matched) counts, whose cumulative share of all
    matches (itself included) is closest to ``p``; the first such count on a tie.

    Note the tail that `tail_share` then measures (count < t) leaves out that entry and its ties, so it can lie
    below p. Raises if nothing matched (t is undefined).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"tail share p must lie in [0, 1], got {p}")
    c = np.asarray(counts, dtype=np.uint64)
    c = np.sort(c[c > 0])
    if not len(c):
        raise ValueError("no matches in these counts: t is undefined (leave the language out or give it t = inf)")
    share = np.cumsum(c) / c.sum()
    return float(c[int(np.argmin(np.abs(share - p)))])


def language_thresholds(
    counts: np.ndarray,
    ranges: Mapping[str, tuple[int, int]],
    *,
    t_en: float = DEFAULT_T_EN,
    reference: str = ENGLISH,
    p: float | None = None,
) -> tuple[float, dict[str, float]]:
    """``(p, {lang: t})``: p is the reference language's tail share at ``t_en`` (or the given ``p``), the reference
    keeps ``t_en``, every other language gets `t_for_tail_share` of its counts; languages without matches get inf.

    ``counts`` is the global count array (ids as `language_ranges`).
    """
    per_lang = split_counts(np.asarray(counts), ranges)
    if p is None:
        ref = per_lang.get(reference)
        if ref is None or not int(ref.sum()):
            raise ValueError(
                f"no {reference!r} matches in the counts, so the tail share p at t_en={t_en:g} is undefined: pass p "
                f"explicitly (MetaCLIP 2's English p at t=170k is about 0.06) or curate a pool with {reference!r} pairs"
            )
        p = tail_share(ref, t_en)
    thresholds = {}
    for lang, c in per_lang.items():
        if lang == reference:
            thresholds[lang] = float(t_en)
        else:
            thresholds[lang] = t_for_tail_share(c, p) if int(c.sum()) else math.inf
    return float(p), thresholds


def language_probabilities(
    counts: np.ndarray, ranges: Mapping[str, tuple[int, int]], thresholds: Mapping[str, float]
) -> np.ndarray:
    """Global float32 ``p[e] = t_lang / max(count[e], t_lang)`` (1 for entries of a language with t = inf)."""
    counts = np.asarray(counts)
    prob = np.ones(len(counts), dtype=np.float32)
    for lang, c in split_counts(counts, ranges).items():
        a, b = ranges[lang]
        prob[a:b] = entry_probabilities(c, thresholds[lang]).astype(np.float32)
    return prob


# ---- one text per image ----------------------------------------------------------------------------------------


def choice_scores(pair_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """The uniform in [0, 1) that chooses among an image's texts (the smallest wins): a hash of (pair id, seed)."""
    p = np.asarray(pair_ids, dtype=np.uint64)
    return pair_entry_uniforms(p, np.full(p.shape, _CHOICE_KEY, dtype=np.uint64), seed)


def image_choices(matched: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Per image (``image_uuid``) of ``matched``, its text with the smallest choice score: columns image_uuid,
    pair_id, score. Computed on any part of a snapshot (a bucket, a shard); `merge_image_choices` of the parts
    gives the choice over the whole snapshot, so the chosen text is independent of how the texts were split."""
    scored = matched.select("image_uuid", "pair_id").with_columns(
        score=pl.Series(choice_scores(matched["pair_id"].to_numpy(), seed), dtype=pl.Float64)
    )
    return merge_image_choices([scored])


def merge_image_choices(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """The per-image minimum (score, then pair_id on an exact tie) over `image_choices` of several parts."""
    frames = list(parts)
    if not frames:
        return pl.DataFrame(schema={"image_uuid": pl.String, "pair_id": pl.UInt64, "score": pl.Float64})
    merged = pl.concat(frames, how="vertical").sort("image_uuid", "score", "pair_id")
    return merged.unique(subset=["image_uuid"], keep="first", maintain_order=True)


def one_text_per_image(matched: pl.DataFrame, seed: int = 0, choices: pl.DataFrame | None = None) -> pl.DataFrame:
    """The rows of ``matched`` that are their image's chosen text. Without ``choices`` every text of an image must
    be in ``matched``; with ``choices`` (`merge_image_choices` over the snapshot) ``matched`` may be any part."""
    if choices is None:
        choices = image_choices(matched, seed)
    return matched.join(choices.select("image_uuid", "pair_id"), on=["image_uuid", "pair_id"], how="semi")


def keep_chosen(
    pair_ids: np.ndarray, offsets: np.ndarray, entry_ids: np.ndarray, entry_prob: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Keep mask of chosen texts: one draw per text (a hash of pair id and seed) against ``1 - prod(1 - p[e])``."""
    pids = np.asarray(pair_ids, dtype=np.uint64)
    prob = keep_probability(offsets, entry_ids, entry_prob)
    if len(pids) != len(prob):
        raise ValueError(f"{len(pids)} pair ids but {len(prob)} rows in offsets")
    return pair_entry_uniforms(pids, np.full(pids.shape, _KEEP_KEY, dtype=np.uint64), seed) < prob


@dataclass
class WorldwideBalanceStats:
    seed: int
    matched: int  # matched texts in
    images: int  # distinct images among them = texts chosen
    curated: int
    expected_curated: float  # sum over chosen texts of 1 - prod(1 - p)

    def as_dict(self) -> dict:
        return asdict(self)


def balance_worldwide(
    matched: pl.DataFrame, entry_prob: np.ndarray, *, seed: int = 0, choices: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, WorldwideBalanceStats]:
    """MetaCLIP 2's curation of matched pairs (columns image_uuid, pair_id, entry_ids as global ids): one text per
    image (`one_text_per_image`), kept by `keep_chosen` with the global float32 ``entry_prob``."""
    # Imported here: stages.py may import this module.
    from metaclip_assets.curation.stages import csr

    chosen = one_text_per_image(matched, seed, choices)
    offsets, ids = csr(chosen)
    prob = np.asarray(entry_prob)
    keep = keep_chosen(chosen["pair_id"].to_numpy(), offsets, ids, prob, seed)
    stats = WorldwideBalanceStats(
        seed=seed,
        matched=len(matched),
        images=len(chosen),
        curated=int(keep.sum()),
        expected_curated=float(keep_probability(offsets, ids, prob).sum()),
    )
    return chosen.filter(pl.Series(keep)), stats


# ---- data card per language ------------------------------------------------------------------------------------


def count_by_language(langs: pl.Series | Sequence[str | None]) -> dict[str, int]:
    """``{lang: rows}`` of a ``lang`` column (nulls count as `OTHER`); add these dicts over buckets with Counter."""
    s = pl.Series("lang", langs, dtype=pl.String).fill_null(OTHER)
    vc = s.value_counts()
    return dict(zip(vc["lang"].to_list(), vc["count"].to_list()))


def language_rows(
    counts: np.ndarray,
    ranges: Mapping[str, tuple[int, int]],
    thresholds: Mapping[str, float],
    *,
    pool_pairs: Mapping[str, int],
    matched_pairs: Mapping[str, int],
    curated_pairs: Mapping[str, int],
) -> list[dict]:
    """One row per language (metadata languages and any other language seen in the pool), most pool pairs first:
    pairs in the pool, matched and curated, matched share, metadata entries, matched entries, t (None: no
    matches or no metadata), tail share (matches on entries with count < t, before balancing) and head entries
    (count >= t, the ones balancing cuts)."""
    per_lang = split_counts(np.asarray(counts), ranges)
    rows = []
    for lang in sorted(set(ranges) | set(pool_pairs) | set(matched_pairs) | set(curated_pairs)):
        c = per_lang.get(lang, np.zeros(0, dtype=np.uint64))
        t = thresholds.get(lang, math.inf)
        pool, matched = int(pool_pairs.get(lang, 0)), int(matched_pairs.get(lang, 0))
        rows.append(
            {
                "lang": lang,
                "pool_pairs": pool,
                "matched_pairs": matched,
                "curated_pairs": int(curated_pairs.get(lang, 0)),
                "matched_share": round(matched / pool, 4) if pool else 0.0,
                "entries": len(c),
                "entries_matched": int((c > 0).sum()),
                "t": None if math.isinf(t) else t,
                "tail_share": None if math.isinf(t) else round(tail_share(c, t), 4),
                "head_entries": 0 if math.isinf(t) else int((c >= t).sum()),
            }
        )
    rows.sort(key=lambda r: (-r["pool_pairs"], -r["curated_pairs"], r["lang"]))
    return rows


def language_table_markdown(rows: list[dict], p: float | None = None, t_en: float | None = None) -> str:
    """The per-language section of the data card (markdown)."""
    head = "## Languages\n\n"
    if p is not None and t_en is not None:
        head += (
            f"English tail share p = **{p:.2%}** at t_en = {t_en:g}; each language's t gives the same tail share.\n\n"
        )
    return head + _md_table(rows)


def pairs_by_language_png(rows: list[dict], title: str, top: int = 25) -> bytes:
    """Bar plot of pairs by language (pool, matched, curated; log scale), the `top` languages by pool pairs and
    the rest summed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    shown = rows[:top]
    rest = rows[top:]
    labels = [r["lang"] for r in shown] + ([f"{len(rest)} more"] if rest else [])
    kinds = (("pool_pairs", "pool"), ("matched_pairs", "matched"), ("curated_pairs", "curated"))
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(labels) + 2), 4), dpi=110)
    for k, (col, label) in enumerate(kinds):
        values = [r[col] for r in shown] + ([sum(r[col] for r in rest)] if rest else [])
        ax.bar(x + (k - 1) * 0.27, values, width=0.27, label=f"{label}: {sum(r[col] for r in rows):,}")
    ax.set_xticks(x, labels, rotation=60, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("pairs (log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with io.BytesIO() as buf:
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()
