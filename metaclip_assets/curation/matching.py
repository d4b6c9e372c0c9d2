"""MetaCLIP v1 substring matching of texts against metadata entries (exact upstream semantics).

Rule (metaclip-facts.md section 2): the text is normalised by `spacing` (pad with one space at both ends, put a space on
both sides of each of `` , . ; : ? ! ` ``, turn each TAB/LF/CR into ONE space, collapse nothing), and entry ``e``
matches iff ``" " + e + " "`` is a plain substring of the normalised text. Case-sensitive, no Unicode normalisation;
overlapping and nested matches all count; each entry id is reported once, ids sorted ascending.

`Matcher.match_batch` computes exactly these sets without an automaton, by hash lookups of the spaced text's
space-separated tokens (see `Matcher`); `Matcher.match` and a few rare inputs use an Aho-Corasick automaton.

Unlike upstream, no module global silently pins the first metadata list: a `Matcher` is built from one list and passed
around explicitly, and the `substr_matching` convenience cache is keyed and verified by the list's content (a list seen
before by a cheap sample of it; see `substr_matching` for what that sample cannot see).
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import partial
from itertools import chain
from operator import itemgetter

import ahocorasick_rs
import numpy as np
import polars as pl

try:  # the token engine as one compiled hash table (_native/token_match.c), built by `pip install`
    from metaclip_assets import _native
except ImportError:  # pragma: no cover - a source checkout that was never installed
    _native = None

__all__ = [
    "spacing",
    "Matcher",
    "substr_matching",
    "substr_matching_batch",
    "match_pool_parallel",
    "MatcherPool",
    "metadata_fingerprint",
]

# The 7 characters MetaCLIP spaces out, then the 3 whitespace characters it maps to a single space.
_PUNCT = (",", ".", ";", ":", "?", "!", "`")
_WS = ("\t", "\n", "\r")
_BATCH = 50_000  # texts per automaton batch
_TOKEN_BATCH = 100_000  # texts per token-join batch (~1.5M tokens): bounds the token columns' memory
_SEP = "\x00"  # sentinel token between texts in a token-join batch
_first = itemgetter(0)


def spacing(text: str) -> str:
    """MetaCLIP's text normalisation, byte for byte.

    Each replace is guarded by an ``in`` test: most texts contain few of the 10 characters, and the scan is ~2.4x
    cheaper than an unconditional `str.replace` that copies the string (performance.md section 1).
    """
    return _replace_spacing_chars(" " + text + " ")


def _replace_spacing_chars(text: str) -> str:
    # The 10 replaces of `spacing`, without its padding; also run over a whole joined batch (`_spaced_bytes`, the
    # token engine).
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
    return _encode(_replace_spacing_chars(big)).split(b"\x00")


def _encode(text: str) -> bytes:
    # Substring tests on UTF-8 bytes equal those on str: the encoding is prefix-free and self-synchronising, and
    # every pattern starts and ends with an ASCII space. "surrogatepass" keeps lone surrogates (possible in str
    # decoded with surrogateescape) from raising; they can only ever match the same surrogates.
    return text.encode("utf-8", "surrogatepass")


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the only str that is not valid UTF-8
        return False
    return True


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
    """Exact MetaCLIP matching against one metadata list (entry id = list index).

    Two exact engines, each built lazily on first use:
      * token joins (default of `match_batch`): the spaced text ``T`` starts and ends with a space and so does every
        padded entry, hence ``" e " in T`` iff ``e == " ".join(toks[a:b])`` for a run of ``T[1:-1].split(" ")``
        (empty tokens from runs of spaces included, so a double space breaks a multi-word entry exactly as in the
        plain loop, and entries with leading/trailing/double spaces match exactly where ``" e "`` occurs). Tokens
        are looked up in one table of the entries and their token prefixes, extending only the runs that a longer
        entry can still continue: one hash probe per token instead of one automaton state (a cache miss with 500k
        patterns) per byte. The table is compiled (`_native.token_match`, ~4.6x less CPU than the automaton, GIL
        released so ``threads=N`` scales); without the compiled module the same joins run in polars (~1.6x).
      * an ahocorasick-rs automaton over the padded entries as UTF-8 bytes: used by `match` on single texts, for
        texts polars cannot hold (NUL, lone surrogates), for metadata with a NUL in an entry, and by the forked
        workers of `match_pool_parallel`.

    Empty entries are rejected (``"  "`` would match every double space, which is never what a metadata list means).
    Duplicate entries are accepted and every id of a duplicated entry is reported, as MetaCLIP's plain loop would.
    Entries that can never match (e.g. ``U.S.``, or containing a newline) are kept: faithful upstream behaviour.

    The joins run on polars' process-wide thread pool (``POLARS_MAX_THREADS``, fixed when polars is first imported);
    the matcher does not change it because other code in the process shares it. Processes that run one matcher per
    core should start with ``POLARS_MAX_THREADS=1``; the per-core benchmarks do.
    """

    def __init__(self, metadata: Sequence[str]):
        entries = tuple(metadata)  # immutable, so `entries` and `fingerprint` always describe the engines
        if len(entries) > 2**32:
            raise ValueError("more than 2**32 entries do not fit uint32 entry ids")
        first_id: dict[str, int] = {}  # distinct entry -> its unique index (order of first appearance)
        for i, e in enumerate(entries):
            if not isinstance(e, str):
                raise TypeError(f"metadata entry {i} is {type(e).__name__}, not str")
            if not e:
                raise ValueError(f"metadata entry {i} is the empty string; it would match every double space")
            first_id.setdefault(e, len(first_id))
        self._entries = entries
        self._unique = list(first_id)  # unique index u -> string; both engines report u
        # Without duplicates, u == entry id and no remapping is needed.
        self._unique_to_ids: list[tuple[int, ...]] | None = None
        if len(self._unique) != len(entries):
            groups: list[list[int]] = [[] for _ in self._unique]
            for i, e in enumerate(entries):
                groups[first_id[e]].append(i)
            self._unique_to_ids = [tuple(g) for g in groups]
            lens = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
            self._group_off = np.zeros(len(groups) + 1, dtype=np.int64)
            np.cumsum(lens, out=self._group_off[1:])
            self._group_ids = np.fromiter(chain.from_iterable(groups), dtype=np.uint32, count=int(lens.sum()))
        # A NUL inside an entry could join across the NUL sentinels between texts: such lists use the automaton.
        self._token_ok = not any(_SEP in e for e in self._unique)
        self._ac_obj: ahocorasick_rs.BytesAhoCorasick | None = None
        self._levels_obj: dict[int, pl.DataFrame] | None = None
        self._native_obj = None  # _native.token_table capsule
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

    # ---- the two engines, built on first use ----

    @property
    def _ac(self) -> ahocorasick_rs.BytesAhoCorasick:
        if self._ac_obj is None:
            self._ac_obj = ahocorasick_rs.BytesAhoCorasick(
                [_encode(" " + e + " ") for e in self._unique], matchkind=ahocorasick_rs.MatchKind.Standard
            )
        return self._ac_obj

    def _token_table(self) -> tuple[list[str], list[int]]:
        """The token engine's keys and values: key -> ``(u + 1) << 1 | grows`` (``u + 1 == 0``: only a prefix).

        Keys are every entry and every proper token prefix of a multi-token entry; ``grows`` says a longer entry
        starts with the key's tokens. Keys with lone surrogates are left out: they only match automaton texts.
        """
        table: dict[str, int] = {}
        for u, e in enumerate(self._unique):
            if " " in e:
                toks = e.split(" ")
                prefix = toks[0]
                for t in toks[1:]:
                    table[prefix] = table.get(prefix, 0) | 1
                    prefix = prefix + " " + t
            table[e] = (table.get(e, 0) & 1) | ((u + 1) << 1)
        keys = [k for k in table if _utf8_ok(k)]
        return keys, [table[k] for k in keys]

    def _native_table(self):
        """The token table as one compiled hash table (`_native.token_table`), built on first use."""
        if self._native_obj is None:
            self._native_obj = _native.token_table(*self._token_table())
        return self._native_obj

    def build_batch_engine(self) -> None:
        """Build what `match_batch` uses now (e.g. in a worker before its first timed batch)."""
        if not self._token_ok:
            self._ac  # noqa: B018
        elif _native is not None:
            self._native_table()
        else:
            self._levels()

    def _levels(self) -> dict[int, pl.DataFrame]:
        """Polars join tables of `_token_table` by run length (the token engine without the compiled module).

        Polars rebuilds a join's hash table on every call, so one small table per run length keeps each join
        paying only for the keys it can hit.
        """
        if self._levels_obj is None:
            keys, values = self._token_table()
            full = pl.DataFrame({"key": pl.Series(keys, dtype=pl.String), "v": np.array(values, dtype=np.int64)})
            full = full.with_columns(level=pl.col("key").str.count_matches(" ", literal=True) + 1)
            self._levels_obj = {int(lvl): g.drop("level") for (lvl,), g in full.group_by("level")}
        return self._levels_obj

    # ---- single texts ----

    def _ids(self, text: str) -> set[int]:
        found = {i for i, _, _ in self._ac.find_matches_as_indexes(_encode(spacing(text)), overlapping=True)}
        if self._unique_to_ids is not None and found:
            groups = self._unique_to_ids
            found = {i for u in found for i in groups[u]}
        return found

    def match(self, text: str) -> list[int]:
        """Sorted ids of the entries that match ``text`` (automaton: no per-call table joins for one text)."""
        return sorted(self._ids(text))

    # ---- batches ----

    def match_batch(self, texts: Sequence[str], threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Match many texts; returns CSR columns ``(offsets int64 (n+1,), entry_ids uint32 (m,))``.

        Text k matched ``entry_ids[offsets[k]:offsets[k+1]]``, ascending, each id once. Token joins by default;
        batches of ``_TOKEN_BATCH`` texts bound the memory of the token columns. ``threads > 1`` splits each batch
        over that many threads sharing the one compiled table (its lookups run without the GIL); same output.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        parts = []  # CSR of consecutive slices, concatenated at the end
        with ThreadPoolExecutor(threads) if self.parallel_ok(threads) else nullcontext() as ex:
            for s in range(0, len(texts), _TOKEN_BATCH):
                batch = texts[s : s + _TOKEN_BATCH]
                if ex is None:
                    parts.append(self._csr_of(batch))
                else:  # one contiguous slice per thread: lookups and the per-slice sort both run in parallel
                    step = -(-len(batch) // threads)
                    parts.extend(ex.map(self._csr_of, [batch[a : a + step] for a in range(0, len(batch), step)]))
        return _concat_csr(parts) if len(parts) != 1 else parts[0]

    def _csr_of(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        rows, uids = self._hits(texts)
        return self._csr(len(texts), [rows], [uids])

    def parallel_ok(self, threads: int) -> bool:
        """Whether ``match_batch(threads=threads)`` runs threads: only the compiled engine releases the GIL."""
        return threads > 1 and _native is not None and self._token_ok

    def _match_batch_automaton(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`match_batch` with the automaton only (what forked workers run: no polars in a forked child)."""
        r, u = self._automaton_hits(texts)
        return self._csr(len(texts), [r], [u])

    def _hits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row, unique index) uint64 pairs for one batch, possibly repeated: compiled table, else polars joins, else
        the automaton for the texts neither can take."""
        if not self._token_ok:
            return self._automaton_hits(texts)
        if _native is not None:  # the same joins as one compiled hash table; None: a text with lone surrogates
            out = _native.token_match(self._native_table(), texts)
            if out is not None:
                return np.frombuffer(out[0], dtype=np.uint64), np.frombuffer(out[1], dtype=np.uint64)
        hits = self._token_hits(texts)
        if hits is not None:
            return hits
        # Some text has a NUL or a lone surrogate: only those go to the automaton (rare; a per-text scan is fine).
        bad = np.fromiter((_SEP in t or not _utf8_ok(t) for t in texts), dtype=bool, count=len(texts))
        good_idx, bad_idx = np.flatnonzero(~bad), np.flatnonzero(bad)
        good = self._token_hits([texts[i] for i in good_idx])
        assert good is not None
        r2, u2 = self._automaton_hits([texts[i] for i in bad_idx])
        rows = np.concatenate((good_idx[good[0].astype(np.intp)], bad_idx[r2.astype(np.intp)])).astype(np.uint64)
        return rows, np.concatenate((good[1], u2))

    def _automaton_hits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        # The automaton calls are driven from C by ``map`` and the pattern ids pulled out with ``np.fromiter``:
        # no Python bytecode per text or per match.
        n = len(texts)
        find = partial(self._ac.find_matches_as_indexes, overlapping=True)
        counts, found = [], []
        with _no_cyclic_gc():
            for s in range(0, n, _BATCH):  # batches bound the memory held by the match tuples
                res = list(map(find, _spaced_bytes(texts[s : s + _BATCH])))
                c = np.fromiter(map(len, res), dtype=np.int64, count=len(res))
                counts.append(c)
                found.append(np.fromiter(map(_first, chain.from_iterable(res)), dtype=np.uint64, count=int(c.sum())))
                del res
        c = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        ids = np.concatenate(found) if found else np.zeros(0, dtype=np.uint64)
        return np.repeat(np.arange(n, dtype=np.uint64), c), ids

    def _token_hits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Token-join hits, or None if some text has a NUL or a lone surrogate.

        All texts are spaced in ONE string (the rule commutes with concatenation) with a NUL token between texts
        and at both ends: ``"\\0 " + t1 + " \\0 " + t2 + " \\0"`` splits into ``\\0, tokens of t1, \\0, ...``. No key
        contains NUL, so a run never crosses a text boundary, and the last token is a sentinel, so a run's next
        token always exists. No Python object is made per token or per match.
        """
        n = len(texts)
        if n == 0:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
        big = _SEP + " " + (" " + _SEP + " ").join(texts) + " " + _SEP
        if big.count(_SEP) != n + 1:
            return None
        big = _replace_spacing_chars(big)
        try:
            tok = pl.Series("s", [big], dtype=pl.String).str.split(" ").explode()
        except UnicodeEncodeError:  # lone surrogates cannot become UTF-8 polars strings
            return None
        del big
        levels = self._levels()
        sep_pos = (tok == _SEP).arg_true().to_numpy()  # n + 1 boundaries; text k lies between sep k and k + 1
        starts, uids = [], []
        cur = pl.DataFrame({"s": tok}).with_row_index("start").with_columns(pl.col("start").cast(pl.Int64))
        cur = cur.with_columns(end=pl.col("start"))
        level = 1
        while cur.height and level in levels:
            hit = cur.join(levels[level], left_on="s", right_on="key", how="inner")
            level += 1
            v = hit["v"].to_numpy()
            is_entry = v >= 2
            starts.append(hit["start"].to_numpy()[is_entry])
            uids.append((v[is_entry] >> 1) - 1)
            grow = hit.filter(pl.Series((v & 1) == 1))
            if not grow.height:
                break
            nxt = tok.gather(grow["end"] + 1)
            cur = grow.select(
                pl.concat_str([pl.col("s"), pl.lit(" "), nxt]).alias("s"), "start", (pl.col("end") + 1).alias("end")
            )
        start = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        uid = (np.concatenate(uids) if uids else np.zeros(0, dtype=np.int64)).astype(np.uint64)
        rows = (np.searchsorted(sep_pos, start, side="right") - 1).astype(np.uint64)
        return rows, uid

    def _csr(self, n: int, rows: list[np.ndarray], uids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """CSR from (row, unique index) hits: duplicates expanded to every id, then per-row dedup + ascending order.

        One numpy sort of ``row << 32 | id`` (not ``np.unique``: in numpy 2.4 it is hash-based and ~30x slower than
        sorting for ~10^6 distinct keys).
        """
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.uint64)
        ids = np.concatenate(uids) if uids else np.zeros(0, dtype=np.uint64)
        if self._unique_to_ids is not None and len(ids):  # each pattern stands for every id of a duplicated entry
            u = ids.astype(np.intp)
            lens = np.diff(self._group_off)[u]
            starts = np.repeat(self._group_off[u] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            ids = self._group_ids[starts + np.arange(int(lens.sum()))].astype(np.uint64)
            row = np.repeat(row, lens)
        key = (row << np.uint64(32)) | ids
        key.sort()
        if len(key):
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount((key >> np.uint64(32)).astype(np.intp), minlength=n), out=offsets[1:])
        return offsets, (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# ---- upstream-shaped convenience API -------------------------------------------------------------------------------

# Matchers for `substr_matching`, in two layers; writes happen under `_lock`, the per-call fast path only reads.
#   * `_cache`, keyed by metadata CONTENT: the hash of the tuple of entries, the stored tuple compared on a hit, so a
#     different list, or the same list mutated, never reuses a stale automaton (the upstream bug). Two slots: a
#     500k-entry automaton is ~70-160 MB.
#   * `_seen`, keyed by id() of a list or tuple already verified: the content check costs O(len) per call (~1 ms at
#     86k entries, ~6 ms at 500k: 150-600x a pyahocorasick loop's cost per text, bench_matching.py --loop), so a list
#     seen before is re-checked by its length and a strided sample of its items instead (~0.5 us). Each record holds a
#     strong reference to its object, so the id cannot be reused by another object while the record exists, and its
#     sample is taken from the verified snapshot, so it describes exactly the content its matcher was built from.
_CACHE_SLOTS = 2
_SEEN_SLOTS = 4  # lists and tuples remembered by identity (several objects may share one cached matcher)
_SAMPLE = 64  # at most this many items (every step-th from the first) plus the last item are compared per call
_lock = threading.Lock()
_cache: OrderedDict[int, tuple[tuple[str, ...], Matcher]] = OrderedDict()
# id(obj) -> (obj, len, step, obj[::step], obj[-1:], matcher); step 0 marks a tuple (identity is enough)
_seen: dict[int, tuple[list[str] | tuple[str, ...], int, int, list[str], list[str], Matcher]] = {}


def _matcher_for(metadata: Sequence[str] | Matcher) -> Matcher:
    seen = _seen.get(id(metadata))  # a Matcher is never recorded: lists and tuples go first, before isinstance
    if seen is not None:
        obj, n, step, sample, last, matcher = seen
        # `is` first: a record only ever answers for its own object. Slices are C loops; list `==` compares by
        # identity first, so an untouched list costs ~64 pointer comparisons.
        if obj is metadata and (
            step == 0 or (len(metadata) == n and metadata[::step] == sample and metadata[-1:] == last)
        ):
            return matcher
    if isinstance(metadata, Matcher):
        return metadata
    return _verified_matcher(metadata)


def _verified_matcher(metadata: Sequence[str]) -> Matcher:
    """The matcher for the CONTENT of ``metadata`` (cached, else built), and ``metadata`` remembered by identity."""
    entries = tuple(metadata)  # a snapshot: later mutation of the caller's list cannot reach the cached copy
    key = hash(entries)
    with _lock:
        hit = _cache.get(key)
        matcher = hit[1] if hit is not None and hit[0] == entries else None
        if matcher is not None:
            _cache.move_to_end(key)
    if matcher is None:
        matcher = Matcher(entries)  # outside the lock: callers with other lists need not wait for this build
        with _lock:
            _cache[key] = (entries, matcher)
            _cache.move_to_end(key)
            while len(_cache) > _CACHE_SLOTS:
                _cache.popitem(last=False)
            live = {id(m) for _, m in _cache.values()}  # forget objects whose matcher left the cache
            for k in [k for k, rec in _seen.items() if id(rec[5]) not in live]:
                del _seen[k]
    # Exact types only: a subclass or another Sequence may index, slice or mutate in ways the sample cannot follow.
    if type(metadata) is tuple:
        record = (metadata, len(entries), 0, [], [], matcher)
    elif type(metadata) is list:
        step = max(1, -(-len(entries) // _SAMPLE))
        record = (metadata, len(entries), step, list(entries[::step]), list(entries[-1:]), matcher)
    else:
        return matcher
    with _lock:
        _seen.pop(id(metadata), None)  # re-insert: dict order is the eviction order, oldest first
        _seen[id(metadata)] = record
        while len(_seen) > _SEEN_SLOTS:
            del _seen[next(iter(_seen))]
    return matcher


def substr_matching(text: str, metadata: Sequence[str] | Matcher) -> list[int]:
    """Sorted ids of the entries of ``metadata`` that match ``text`` (MetaCLIP's ``substr_matching``).

    Safe to call in a loop, as MetaCLIP's scripts do: the matcher for ``metadata`` is built on the first call and
    cached (two lists' worth, keyed by content), and a list or tuple object seen before costs what `Matcher.match`
    costs plus ~0.5 us of checking. That check is exact for a tuple (immutable, so identity suffices) and for a list
    of up to 64 items (all compared). For a longer list it compares the length, the last item and the items at
    positions ``0, s, 2s, ...`` with ``s = ceil(len / 64)``, so appending, removing, inserting, sorting, shuffling or
    replacing the list's content is detected and answered from the new content. NOT detected: replacing an item of
    the same list object in place (``metadata[i] = "other"``) at a position outside that sample, keeping its length;
    the call then answers from the content the list had before. Pass a tuple or a `Matcher` (both immutable) to rule
    this out, or a new list object after such an edit. Any other object, and a list whose check fails, has its whole
    content hashed and compared (O(len(metadata)), a few ms for 500k entries).
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
# costs ~3-4 s per process). Set only in the parent right before forking, cleared afterwards. Workers run the
# AUTOMATON engine only: polars is not fork-safe once its thread pool has started (a lock held by one of its threads
# at fork time stays held forever in the child), and the parent may well have used it.
_worker_matcher: Matcher | None = None


def _worker_match(chunk: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _worker_matcher is not None, "worker was not forked from match_pool_parallel"
    return _worker_matcher._match_batch_automaton(chunk)


def match_pool_parallel(
    texts: Sequence[str], matcher: Matcher, workers: int | None = None, chunk_size: int = 20_000
) -> tuple[np.ndarray, np.ndarray]:
    """`Matcher.match_batch` over ``workers`` forked processes; same output, byte for byte.

    Workers are forked after the automaton is built (here, if `matcher` has not built it yet) and inherit it
    copy-on-write; they run the automaton engine, never polars (not fork-safe), so forking a process whose polars or
    dagster thread pools are running is safe as nothing else runs in the children. The serial default (token joins)
    uses ~2x less CPU than the automaton per text, so 2 workers beat it only on 2 otherwise idle cores; prefer
    `Matcher.match_batch` with one process per core. Falls back to serial `match_batch` for one worker, one chunk,
    or where fork is unavailable.
    """
    global _worker_matcher
    workers = workers or os.cpu_count() or 1
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    chunks = [list(texts[i : i + chunk_size]) for i in range(0, len(texts), chunk_size)]
    if workers <= 1 or len(chunks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return matcher.match_batch(texts)
    matcher._ac  # noqa: B018 - build before forking, once, shared copy-on-write
    _worker_matcher = matcher
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
            parts = pool.map(_worker_match, chunks, chunksize=1)  # map keeps chunk order
    finally:
        _worker_matcher = None
    return _concat_csr(parts)


# A Matcher built once in each MatcherPool worker (spawned, so nothing of the parent's threads is inherited).
_pool_matcher: Matcher | None = None


def _pool_init(metadata: list[str], polars_threads: int, built) -> None:
    global _pool_matcher
    # before the worker's first polars call: its thread pool is sized lazily from this variable
    os.environ["POLARS_MAX_THREADS"] = str(polars_threads)
    _pool_matcher = Matcher(metadata)
    _pool_matcher.build_batch_engine()  # build the tables now, not inside the first timed chunk
    built.wait()


def _pool_match(chunk: list[str]) -> tuple[np.ndarray, np.ndarray]:
    assert _pool_matcher is not None, "MatcherPool worker without a matcher"
    return _pool_matcher.match_batch(chunk)


def _concat_csr(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint32)
    lengths = np.concatenate([np.diff(off) for off, _ in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.concatenate([ids for _, ids in parts]).astype(np.uint32, copy=False)


class MatcherPool:
    """`Matcher.match_batch` on ``workers`` persistent processes running the default (token-join) engine.

    Workers are spawned, not forked (polars is not fork-safe once its threads run), and each builds its own Matcher
    from the metadata once (~2 s for 500k entries, in parallel); after that, batches are split into chunks that the
    workers match concurrently, one polars thread each. Output is byte-identical to ``Matcher(metadata).match_batch``.
    Use it for shard-sized work on a multi-core worker; ``with MatcherPool(md, 2) as pool: pool.match_batch(texts)``.
    """

    def __init__(
        self, metadata: Sequence[str], workers: int | None = None, chunk_size: int = 50_000, build_timeout: float = 300
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.workers = workers or os.cpu_count() or 1
        self.chunk_size = chunk_size
        ctx = multiprocessing.get_context("spawn")
        built = ctx.Barrier(self.workers + 1)
        self._pool = ctx.Pool(self.workers, initializer=_pool_init, initargs=(list(metadata), 1, built))
        try:  # every worker has built its tables: the first batch is not charged for the builds
            built.wait(timeout=build_timeout)
        except Exception:
            self._pool.terminate()
            raise RuntimeError(f"MatcherPool workers did not build their matchers within {build_timeout} s") from None

    def match_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        chunks = [list(texts[i : i + self.chunk_size]) for i in range(0, len(texts), self.chunk_size)]
        return _concat_csr(self._pool.map(_pool_match, chunks, chunksize=1))  # map keeps chunk order

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def __enter__(self) -> MatcherPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
