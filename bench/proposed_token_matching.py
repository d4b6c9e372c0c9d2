"""Prototype: exact MetaCLIP v1 matching WITHOUT an automaton, as columnar hash joins over tokens (polars).

Why it is exact (metaclip-facts.md section 2, "automaton-free formulation"): the spaced text T starts and ends with a
space and every padded entry ``" e "`` starts and ends with one, so ``" e "`` occurs in T iff ``e`` equals the text
strictly between two space positions of T, i.e. ``" ".join(toks[a:b])`` for a run of the tokens ``T.split(" ")``
that lies between the first and the last space (empty tokens from double spaces included). Nothing else is assumed:
case, punctuation and Unicode are compared byte for byte.

Why it is fast: Aho-Corasick walks one automaton state per text BYTE, and with 500k patterns the automaton
(~70-160 MB) does not fit any cache, so most bytes cost a cache miss (~85 ns/byte measured). Here the unit is a
TOKEN: one hash probe per token into the single-token keys, then only the runs whose prefix can still grow are
extended one token at a time and probed against the keys of that many tokens. Keys = every entry and every proper
token-prefix of a multi-word entry (639k for 500k entries), split by token count (372k, 186k, 47k, 20k, ...):
polars rebuilds a join's hash table on every call, so each join only pays for the keys it can hit.

Layout: all texts of a batch are spaced in ONE Python string (the spacing rule commutes with concatenation) with a
NUL token between texts and at both ends, split and joined in polars (no Python object per token or per match).
No table key contains NUL, so a run can never cross a text boundary. Texts containing NUL, or that polars cannot
hold (lone surrogates), and metadata with NUL in an entry fall back to the Aho-Corasick `Matcher`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from metaclip_assets.curation.matching import Matcher

_PUNCT = (",", ".", ";", ":", "?", "!", "`")
_WS = ("\t", "\n", "\r")
_SEP = "\x00"


class TokenMatcher:
    """Same contract as `Matcher.match_batch` (CSR, ids ascending, each once); built from the same metadata list."""

    def __init__(self, metadata: Sequence[str], fallback: Matcher | None = None):
        entries = list(metadata)
        self._fallback = fallback
        self._metadata = entries
        first: dict[str, int] = {}
        for i, e in enumerate(entries):
            if not isinstance(e, str) or not e:
                raise ValueError(f"metadata entry {i} must be a non-empty str")
            first.setdefault(e, i)
        self._usable = not any(_SEP in e for e in first)
        # value = (first entry id + 1) * 2 + has_longer_entry_with_this_token_prefix; 0 would mean "no entry".
        table: dict[str, int] = {}
        for e, i in first.items():
            if " " in e:
                toks = e.split(" ")
                prefix = toks[0]
                for t in toks[1:]:
                    table[prefix] = table.get(prefix, 0) | 1
                    prefix = prefix + " " + t
            table[e] = (table.get(e, 0) & 1) | ((i + 1) << 1)
        keys = [k for k in table if _utf8_ok(k)]  # keys with lone surrogates can only match texts that fall back
        full = pl.DataFrame({"key": keys, "v": np.fromiter((table[k] for k in keys), np.int64, len(keys))})
        # One table per run length (tokens = spaces + 1): a join at level L only ever hits keys of L tokens, and
        # polars rebuilds a join's hash table on every call, so small per-level tables keep that cost down.
        full = full.with_columns(level=pl.col("key").str.count_matches(" ", literal=True) + 1)
        self._levels = {lvl: g.drop("level") for (lvl,), g in full.group_by("level")}
        self._groups = None
        if len(first) != len(entries):  # duplicates: report every id of a duplicated entry, like Matcher
            ids_of: list[list[int]] = [[] for _ in entries]
            for i, e in enumerate(entries):
                ids_of[first[e]].append(i)
            lens = np.fromiter(map(len, ids_of), np.int64, len(entries))
            g_off = np.zeros(len(entries) + 1, dtype=np.int64)
            np.cumsum(lens, out=g_off[1:])
            g_ids = np.fromiter((i for g in ids_of for i in g), np.uint64, int(g_off[-1]))
            self._groups = (g_off, g_ids)

    def _matcher(self) -> Matcher:
        if self._fallback is None:
            self._fallback = Matcher(self._metadata)
        return self._fallback

    def match_batch(self, texts: Sequence[str], chunk_size: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
        """Chunks of ``chunk_size`` texts bound the memory of the token columns (~3M tokens per 200k texts)."""
        n = len(texts)
        if n <= chunk_size:
            return self._match_chunk(texts)
        parts = [self._match_chunk(texts[s : s + chunk_size]) for s in range(0, n, chunk_size)]
        lengths = np.concatenate([np.diff(o) for o, _ in parts])
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, np.concatenate([i for _, i in parts])

    def _match_chunk(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        n = len(texts)
        if n == 0:
            return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint32)
        big = _SEP + " " + (" " + _SEP + " ").join(texts) + " " + _SEP
        if not self._usable or big.count(_SEP) != n + 1:
            return self._matcher().match_batch(texts)
        for c in _PUNCT:
            if c in big:
                big = big.replace(c, " " + c + " ")
        for c in _WS:
            if c in big:
                big = big.replace(c, " ")
        try:
            tok = pl.Series("s", [big]).str.split(" ").explode()
        except Exception:  # noqa: BLE001 - lone surrogates cannot become UTF-8 polars strings
            return self._matcher().match_batch(texts)
        del big
        sep_pos = (tok == _SEP).arg_true().to_numpy()  # n + 1 boundaries; texts lie between consecutive ones
        starts, uids = [], []
        cur = pl.DataFrame({"s": tok}).with_row_index("start").with_columns(pl.col("start").cast(pl.Int64))
        cur = cur.with_columns(end=pl.col("start"))
        level = 1
        while cur.height and level in self._levels:
            hit = cur.join(self._levels[level], left_on="s", right_on="key", how="inner")
            level += 1
            v = hit["v"].to_numpy()
            is_entry = v >= 2
            starts.append(hit["start"].to_numpy()[is_entry])
            uids.append((v[is_entry] >> 1) - 1)
            grow = hit.filter(pl.Series(v & 1 == 1))
            if not grow.height:
                break
            nxt = tok.gather(grow["end"] + 1)  # never past the end: the last token is the NUL sentinel
            cur = grow.select(
                pl.concat_str([pl.col("s"), pl.lit(" "), nxt]).alias("s"), "start", (pl.col("end") + 1).alias("end")
            )
        start = np.concatenate(starts)
        uid = np.concatenate(uids).astype(np.uint64)
        rows = (np.searchsorted(sep_pos, start, side="right") - 1).astype(np.uint64)
        if self._groups is not None:
            rows, uid = _expand_groups(rows, uid, self._groups)
        key = (rows << np.uint64(32)) | uid
        key.sort()
        if len(key):
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        lengths = np.bincount((key >> np.uint64(32)).astype(np.intp), minlength=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _expand_groups(rows: np.ndarray, uid: np.ndarray, groups: tuple[np.ndarray, np.ndarray]):
    """Each hit on a duplicated entry's first id stands for all of its ids (CSR over first ids)."""
    g_off, g_ids = groups
    lens = np.diff(g_off)[uid.astype(np.intp)]
    starts = np.repeat(g_off[uid.astype(np.intp)] - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return np.repeat(rows, lens), g_ids[starts + np.arange(int(lens.sum()))]
