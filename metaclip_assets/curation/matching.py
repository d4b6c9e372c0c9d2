"""MetaCLIP v1 substring matching of texts against metadata entries (exact upstream semantics).

Rule (metaclip-facts.md section 2): the text is normalised by `spacing` (pad with one space at both ends, put a space on
both sides of each of `` , . ; : ? ! ` ``, turn each TAB/LF/CR into ONE space, collapse nothing), and entry ``e``
matches iff ``" " + e + " "`` is a plain substring of the normalised text. Case-sensitive, no Unicode normalisation;
overlapping and nested matches all count; each entry id is reported once, ids sorted ascending.

Unlike upstream, no module global silently pins the first metadata list: a `Matcher` is built from one list and passed
around explicitly, and the `substr_matching` convenience cache is keyed and verified by the list's content.
"""
from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from itertools import chain
from operator import itemgetter

import ahocorasick_rs
import numpy as np

__all__ = [
    "spacing",
    "Matcher",
    "substr_matching",
    "substr_matching_batch",
    "match_pool_parallel",
    "metadata_fingerprint",
]

# The 7 characters MetaCLIP spaces out, then the 3 whitespace characters it maps to a single space.
_PUNCT = (",", ".", ";", ":", "?", "!", "`")
_WS = ("\t", "\n", "\r")
_BATCH = 50_000  # texts per automaton batch in match_batch
_first = itemgetter(0)


def spacing(text: str) -> str:
    """MetaCLIP's text normalisation, byte for byte.

    Each replace is guarded by an ``in`` test: most texts contain few of the 10 characters, and the scan is ~2.4x
    cheaper than an unconditional `str.replace` that copies the string (performance.md section 1).
    """
    text = " " + text + " "
    for c in _PUNCT:
        if c in text:
            text = text.replace(c, " " + c + " ")
    for c in _WS:
        if c in text:
            text = text.replace(c, " ")
    return text


def _spaced_bytes(texts: Sequence[str]) -> list[bytes]:
    """``[_encode(spacing(t)) for t in texts]``, computed on one joined string.

    The rule is a per-character replacement plus one space of padding at both ends, so it commutes with
    concatenation: the 10 replaces run once over the whole batch (long C loops instead of 10 ``in`` scans per text)
    and ``split(b"\\x00")`` restores the texts. Exact only if no text contains NUL, checked by one count.
    """
    if not texts:
        return []
    big = " " + " \x00 ".join(texts) + " "
    if big.count("\x00") != len(texts) - 1:
        return [_encode(spacing(t)) for t in texts]
    for c in _PUNCT:
        if c in big:
            big = big.replace(c, " " + c + " ")
    for c in _WS:
        if c in big:
            big = big.replace(c, " ")
    return _encode(big).split(b"\x00")


def _encode(text: str) -> bytes:
    # Substring tests on UTF-8 bytes equal those on str: the encoding is prefix-free and self-synchronising, and
    # every pattern starts and ends with an ASCII space. "surrogatepass" keeps lone surrogates (possible in str
    # decoded with surrogateescape) from raising; they can only ever match the same surrogates.
    return text.encode("utf-8", "surrogatepass")


def metadata_fingerprint(metadata: Sequence[str]) -> str:
    """sha256 hex of ``json.dumps(list(metadata))`` (json's default separators and ASCII escaping).

    With those defaults this equals the sha256 of a metadata file written by ``json.dump(list, f)``, e.g.
    ``wordnet_part_86654.json``, so an artifact's fingerprint can be checked against the file itself.
    """
    return hashlib.sha256(json.dumps(list(metadata)).encode("ascii")).hexdigest()


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    # The batch loop creates millions of short-lived tuples/sets; none are cyclic, but they trigger generation-0
    # collections that walk the heap (worth 1.16-1.22x, performance.md section 1). Restore the caller's setting.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Matcher:
    """An Aho-Corasick automaton over the padded entries of one metadata list (entry id = list index).

    Empty entries are rejected (``"  "`` would match every double space, which is never what a metadata list means).
    Duplicate entries are accepted: the automaton is built over distinct entries and every id of a duplicated entry
    is reported, as MetaCLIP's plain loop would. Entries that can never match (e.g. ``U.S.``, or containing a
    newline) are kept as they are: that is the faithful upstream behaviour.

    ahocorasick-rs objects cannot be pickled; to use several processes build the Matcher first and fork
    (see `match_pool_parallel`).
    """

    def __init__(self, metadata: Sequence[str]):
        entries = tuple(metadata)  # immutable, so `entries` and `fingerprint` always describe the automaton
        if len(entries) > 2**32:
            raise ValueError("more than 2**32 entries do not fit uint32 entry ids")
        first_id: dict[str, int] = {}  # distinct entry -> its pattern index (order of first appearance)
        for i, e in enumerate(entries):
            if not isinstance(e, str):
                raise TypeError(f"metadata entry {i} is {type(e).__name__}, not str")
            if not e:
                raise ValueError(f"metadata entry {i} is the empty string; it would match every double space")
            first_id.setdefault(e, len(first_id))
        self._entries = entries
        unique = list(first_id)  # dict preserves insertion order: unique index u -> string
        self._ac = ahocorasick_rs.BytesAhoCorasick(
            [_encode(" " + e + " ") for e in unique], matchkind=ahocorasick_rs.MatchKind.Standard
        )
        # Without duplicates, pattern index == entry id and the hot loop needs no remapping.
        self._unique_to_ids: list[tuple[int, ...]] | None = None
        if len(unique) != len(entries):
            groups: list[list[int]] = [[] for _ in unique]
            for i, e in enumerate(entries):
                groups[first_id[e]].append(i)
            self._unique_to_ids = [tuple(g) for g in groups]
            lens = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
            self._group_off = np.zeros(len(groups) + 1, dtype=np.int64)
            np.cumsum(lens, out=self._group_off[1:])
            self._group_ids = np.fromiter(chain.from_iterable(groups), dtype=np.uint32, count=int(lens.sum()))
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[str, ...]:
        return self._entries

    @property
    def fingerprint(self) -> str:
        """`metadata_fingerprint` of the list this matcher was built from (computed on first use)."""
        if self._fingerprint is None:
            self._fingerprint = metadata_fingerprint(self._entries)
        return self._fingerprint

    def _ids(self, text: str) -> set[int]:
        found = {i for i, _, _ in self._ac.find_matches_as_indexes(_encode(spacing(text)), overlapping=True)}
        if self._unique_to_ids is not None and found:
            groups = self._unique_to_ids
            found = {i for u in found for i in groups[u]}
        return found

    def match(self, text: str) -> list[int]:
        """Sorted ids of the entries that match ``text``."""
        return sorted(self._ids(text))

    def match_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Match many texts; returns CSR columns ``(offsets int64 (n+1,), entry_ids uint32 (m,))``.

        Text k matched ``entry_ids[offsets[k]:offsets[k+1]]``, ascending, each id once.

        No Python bytecode runs per text or per match: the automaton calls are driven from C by ``map``, the pattern
        ids are pulled out with ``np.fromiter``, and per-text dedup + ordering is one numpy sort of
        ``row << 32 | id`` (the keys arrive grouped by row, so the stable sort is nearly linear). Not ``np.unique``:
        in numpy 2.4 it is hash-based and ~30x slower than sorting for ~10^6 distinct keys.
        """
        n = len(texts)
        find = partial(self._ac.find_matches_as_indexes, overlapping=True)
        counts, found = [], []
        with _no_cyclic_gc():
            for s in range(0, n, _BATCH):  # batches bound the memory held by the match tuples
                res = list(map(find, _spaced_bytes(texts[s : s + _BATCH])))
                c = np.fromiter(map(len, res), dtype=np.int64, count=len(res))
                counts.append(c)
                found.append(np.fromiter(map(_first, chain.from_iterable(res)), dtype=np.uint32, count=int(c.sum())))
                del res
        c = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        ids = np.concatenate(found) if found else np.zeros(0, dtype=np.uint32)
        rows = np.repeat(np.arange(n, dtype=np.uint64), c)
        if self._unique_to_ids is not None and len(ids):  # each pattern stands for every id of a duplicated entry
            lens = np.diff(self._group_off)[ids]
            starts = np.repeat(self._group_off[ids] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            ids = self._group_ids[starts + np.arange(int(lens.sum()))]
            rows = np.repeat(rows, lens)
        key = (rows << np.uint64(32)) | ids.astype(np.uint64)
        key.sort(kind="stable")
        if len(key):
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount((key >> np.uint64(32)).astype(np.intp), minlength=n), out=offsets[1:])
        return offsets, (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# ---- upstream-shaped convenience API -------------------------------------------------------------------------------

# Small cache of matchers keyed by metadata CONTENT. The key is the hash of the tuple of entries; the stored tuple
# is compared for equality on every hit, so a different list, or the same list mutated in place, never reuses a
# stale automaton (the upstream bug). Two slots: a 500k-entry automaton is ~70-160 MB.
_CACHE_SLOTS = 2
_cache: OrderedDict[int, tuple[tuple[str, ...], Matcher]] = OrderedDict()


def _matcher_for(metadata: Sequence[str] | Matcher) -> Matcher:
    if isinstance(metadata, Matcher):
        return metadata
    key_tuple = tuple(metadata)  # a snapshot: later mutation of the caller's list cannot reach the cached copy
    key = hash(key_tuple)
    hit = _cache.get(key)
    if hit is not None and hit[0] == key_tuple:
        _cache.move_to_end(key)
        return hit[1]
    matcher = Matcher(key_tuple)
    _cache[key] = (key_tuple, matcher)
    _cache.move_to_end(key)
    while len(_cache) > _CACHE_SLOTS:
        _cache.popitem(last=False)
    return matcher


def substr_matching(text: str, metadata: Sequence[str] | Matcher) -> list[int]:
    """Sorted ids of the entries of ``metadata`` that match ``text`` (MetaCLIP's ``substr_matching``).

    Each call checks the metadata's content against the cache (O(len(metadata)) hashing and comparison, a few ms for
    500k entries); pass a `Matcher` to skip that in loops.
    """
    return _matcher_for(metadata).match(text)


def substr_matching_batch(texts: Sequence[str], metadata: Sequence[str] | Matcher) -> list[list[int]]:
    """`substr_matching` for many texts at once, as one list of sorted id lists per text."""
    offsets, ids = _matcher_for(metadata).match_batch(texts)
    flat = ids.tolist()
    bounds = offsets.tolist()
    return [flat[bounds[k] : bounds[k + 1]] for k in range(len(texts))]


# ---- multi-process matching ------------------------------------------------------------------------------------------

# The matcher a forked worker inherits (ahocorasick-rs automata cannot be pickled, and rebuilding a 500k-entry one
# costs ~3-4 s per process). Set only in the parent right before forking, cleared afterwards.
_worker_matcher: Matcher | None = None


def _worker_match(chunk: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_matcher is not None, "worker was not forked from match_pool_parallel"
    return _worker_matcher.match_batch(chunk)


def match_pool_parallel(
    texts: Sequence[str], matcher: Matcher, workers: int | None = None, chunk_size: int = 20_000
) -> tuple[np.ndarray, np.ndarray]:
    """`Matcher.match_batch` over ``workers`` forked processes; same output, byte for byte.

    Workers are forked after the automaton is built and inherit it copy-on-write. Expect 1.5-2x on 2 idle cores and
    no gain on a loaded machine or below a few 100k texts (performance.md section 1); falls back to serial for one
    worker, one chunk, or where fork is unavailable. Workers run only the matcher, so forking a process that has
    other libraries' thread pools running (polars, dagster) is safe as long as nothing else runs in the children.
    """
    global _worker_matcher
    workers = workers or os.cpu_count() or 1
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    chunks = [list(texts[i : i + chunk_size]) for i in range(0, len(texts), chunk_size)]
    if workers <= 1 or len(chunks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return matcher.match_batch(texts)
    _worker_matcher = matcher
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
            parts = pool.map(_worker_match, chunks, chunksize=1)  # map keeps chunk order
    finally:
        _worker_matcher = None
    lengths = np.concatenate([np.diff(off) for off, _ in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.concatenate([ids for _, ids in parts]).astype(np.uint32, copy=False)
