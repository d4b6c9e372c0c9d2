"""MetaCLIP v1 substring matching: every consequence listed in metaclip-facts.md section 2, plus equivalence with
the upstream plain loop and pyahocorasick formulation on random and real texts."""

from __future__ import annotations

import collections
import json
import random

import numpy as np
import pytest

from metaclip_assets.curation import matching
from metaclip_assets.curation.matching import (
    Matcher,
    match_pool_parallel,
    metadata_fingerprint,
    spacing,
    substr_matching,
    substr_matching_batch,
)


def reference(text: str, metadata: list[str]) -> list[int]:
    """MetaCLIP's plain loop, the definition of the semantics."""
    t = spacing(text)
    return [i for i, e in enumerate(metadata) if f" {e} " in t]


def matched(text: str, metadata: list[str]) -> set[str]:
    ids = Matcher(metadata).match(text)
    assert ids == reference(text, metadata)  # every case below also checks the plain loop agrees
    return {metadata[i] for i in ids}


# ---- spacing ---------------------------------------------------------------------------------------------------------


def test_spacing_exact_bytes():
    assert spacing("a,b.c;d:e?f!g`h") == " a , b . c ; d : e ? f ! g ` h "
    assert spacing("a\tb\nc\rd") == " a b c d "
    assert spacing("a\r\nb") == " a  b "  # CRLF -> two spaces
    assert spacing("a  b") == " a  b "  # runs are not collapsed
    assert spacing("") == "  "
    assert spacing("x\u00a0y") == " x\u00a0y "  # NBSP untouched
    assert spacing("a - (b) [c] {d} \"e\" f/g + & * 'h'") == " a - (b) [c] {d} \"e\" f/g + & * 'h' "


def _upstream_spacing(text: str) -> str:
    # The unguarded 10 replaces, in MetaCLIP's order.
    text = " " + text + " "
    for c in ",.;:?!`":
        text = text.replace(c, " " + c + " ")
    for c in "\t\n\r":
        text = text.replace(c, " ")
    return text


def test_spacing_matches_unguarded_form_on_random_texts():
    rng = random.Random(1)
    alphabet = "ab ,.;:?!`\t\n\r\u00a0é'"
    for _ in range(2000):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert spacing(t) == _upstream_spacing(t)


# ---- consequences (metaclip-facts.md section 2) ----------------------------------------------------------------------


def test_case_sensitive():
    assert matched("Dog on grass", ["dog", "Dog"]) == {"Dog"}
    assert matched("I love New York", ["new york", "New York"]) == {"New York"}


def test_whole_token_only():
    md = ["dog"]
    assert matched("dogdog", md) == set()
    assert matched("hotdog", md) == set()
    for text in [
        "dog's bed",
        "(dog)",
        "dog-friendly",
        "dog/cat",
        '"dog"',
        "[dog]",
        "{dog}",
        "dog+cat",
        "dog&cat",
        "dog*",
    ]:
        assert matched(text, md) == set(), text
    assert matched("a dog here", md) == {"dog"}
    assert matched("dog", md) == {"dog"}  # text edges count as spaces


def test_apostrophe_entry_matches_itself():
    assert matched("my dog's bed", ["dog's", "dog"]) == {"dog's"}


def test_seven_characters_separate_tokens():
    md = ["dog", "cat"]
    for sep in ",.;:?!`":
        assert matched(f"dog{sep}cat", md) == {"dog", "cat"}, sep


def test_overlapping_and_nested():
    md = ["hot dog", "dog bowl", "hot", "dog", "bowl", "hot dog bowl x"]
    assert matched("hot dog bowl", md) == {"hot dog", "dog bowl", "hot", "dog", "bowl"}
    md = ["New York City", "New York", "York", "York City", "City", "new york"]
    assert matched("New York City", md) == {"New York City", "New York", "York", "York City", "City"}


def test_each_id_once_sorted():
    md = ["b", "a"]
    assert Matcher(md).match("a b a b a") == [0, 1]
    offsets, ids = Matcher(md).match_batch(["a b a b a"])
    assert offsets.tolist() == [0, 2] and ids.tolist() == [0, 1]


def test_punctuated_entries_never_match():
    md = ["U.S.", "St. Louis", "Yahoo!", "Hello, World!", "U", "S", "Louis"]
    assert matched("Made in the U.S. by Yahoo! in St. Louis: Hello, World!", md) == {"U", "S", "Louis"}


def test_pathological_spaced_entry_matches():
    assert matched("a.b", ["a . b", "a.b"]) == {"a . b"}


def test_numbers():
    md = ["3", "5", "3.5", "1", "000", "1,000"]
    assert matched("3.5", md) == {"3", "5"}
    assert matched("1,000", md) == {"1", "000"}
    assert matched("1,000", ["1", "1,000"]) == {"1"}


def test_crlf_is_two_spaces():
    md = ["hot dog", "hot", "dog"]
    assert matched("hot\r\ndog", md) == {"hot", "dog"}


def test_tab_and_lf_are_one_space():
    md = ["hot dog"]
    assert matched("hot\tdog", md) == {"hot dog"}
    assert matched("hot\ndog", md) == {"hot dog"}
    assert matched("hot\rdog", md) == {"hot dog"}


def test_double_space_breaks_multiword():
    assert matched("hot  dog", ["hot dog", "dog"]) == {"dog"}


def test_nbsp_and_unicode_spaces_are_not_spaces():
    md = ["hot dog", "hot", "dog"]
    assert matched("hot\u00a0dog", md) == set()
    assert matched("hot\u2009dog", md) == set()  # thin space
    assert matched("hot\u3000dog", md) == set()  # ideographic space


def test_no_unicode_normalisation():
    precomposed, combining = "caf\u00e9", "cafe\u0301"
    assert matched("un café ici", [precomposed, combining]) == {precomposed}
    assert matched(f"un {combining} ici", [precomposed, combining]) == {combining}


def test_unspaced_cjk_matches_nothing():
    md = ["狗", "热狗", "dog"]
    assert matched("我喜欢热狗", md) == set()
    assert matched("热狗 狗", md) == {"热狗", "狗"}  # only when spaced


# ---- Matcher construction --------------------------------------------------------------------------------------------


def test_empty_entry_rejected():
    with pytest.raises(ValueError, match="empty"):
        Matcher(["dog", ""])


def test_non_str_entry_rejected():
    with pytest.raises(TypeError):
        Matcher(["dog", 3])  # type: ignore[list-item]


def test_duplicate_entries_report_every_id():
    md = ["dog", "cat", "dog", "hot dog", "dog"]
    m = Matcher(md)
    assert m.match("hot dog") == [0, 2, 3, 4] == reference("hot dog", md)
    offsets, ids = m.match_batch(["cat", "hot dog", "none"])
    assert offsets.tolist() == [0, 1, 5, 5]
    assert ids.tolist() == [1, 0, 2, 3, 4]


def test_match_batch_dtypes_and_empty():
    m = Matcher(["dog"])
    offsets, ids = m.match_batch([])
    assert offsets.dtype == np.int64 and ids.dtype == np.uint32
    assert offsets.tolist() == [0] and ids.size == 0
    offsets, ids = m.match_batch(["", "cat", "dog"])
    assert offsets.tolist() == [0, 0, 0, 1] and ids.tolist() == [0]


def test_lone_surrogate_text_does_not_raise():
    md = ["dog", "\udc80"]
    assert Matcher(md).match("dog \udc80") == reference("dog \udc80", md) == [0, 1]


def test_fingerprint():
    md = ["a", "b é"]
    m = Matcher(md)
    assert m.fingerprint == metadata_fingerprint(md) == metadata_fingerprint(tuple(md))
    assert m.fingerprint != Matcher(["a", "b e"]).fingerprint
    assert m.fingerprint != Matcher(["b é", "a"]).fingerprint  # order is part of the ids


@pytest.mark.realdata
def test_fingerprint_equals_metadata_file_sha256(shared_metaclip):
    import hashlib

    path = shared_metaclip / "wordnet_part_86654.json"
    md = json.loads(path.read_bytes())
    assert metadata_fingerprint(md) == hashlib.sha256(path.read_bytes()).hexdigest()


# ---- substr_matching: no stale global cache --------------------------------------------------------------------------


def test_substr_matching_uses_the_given_metadata_each_call():
    text = "a hot dog"
    assert substr_matching(text, ["dog", "cat"]) == [0]
    assert substr_matching(text, ["cat", "hot"]) == [1]  # upstream would still answer from ["dog", "cat"]
    assert substr_matching(text, ["dog", "cat"]) == [0]


def test_substr_matching_detects_in_place_mutation():
    md = ["dog", "cat"]
    assert substr_matching("a cat", md) == [1]
    md[1] = "bird"
    assert substr_matching("a cat", md) == []
    assert substr_matching("a bird", md) == [1]
    md.append("cat")
    assert substr_matching("a cat", md) == [2]


def test_substr_matching_cache_reuses_equal_content():
    md = ["dog", "cat"]
    substr_matching("x", md)
    first = matching._matcher_for(md)
    assert matching._matcher_for(list(md)) is first  # equal content, different list object
    assert matching._matcher_for(["dog", "cow"]) is not first
    assert len(matching._cache) <= matching._CACHE_SLOTS


def test_substr_matching_batch():
    md = ["dog", "cat", "hot dog"]
    texts = ["hot dog", "", "cat, dog"]
    expected = [reference(t, md) for t in texts]
    assert substr_matching_batch(texts, md) == expected
    assert substr_matching_batch(texts, Matcher(md)) == expected


# ---- substr_matching in a loop (issue 14): verified once, then re-checked by identity and a sample --------------------


@pytest.fixture
def fresh_cache(monkeypatch):
    """Empty convenience caches for one test (other tests' lists must not decide what is verified when)."""
    monkeypatch.setattr(matching, "_cache", collections.OrderedDict())
    monkeypatch.setattr(matching, "_seen", {})


@pytest.fixture
def count_verifications(monkeypatch, fresh_cache):
    """A list that counts the O(len) content verifications of `substr_matching` (one item per call)."""
    calls = []
    verify = matching._verified_matcher
    monkeypatch.setattr(matching, "_verified_matcher", lambda md: calls.append(1) or verify(md))
    return calls


def _wordnet_texts(md: list[str], n: int, seed: int) -> list[str]:
    # Alt-text-like: WordNet entries (multi-word ones included) between common words and MetaCLIP's separators.
    rng = random.Random(seed)
    return [
        "".join(rng.choice(md) if rng.random() < 0.4 else rng.choice(_WORDS) + rng.choice(_SEPS) for _ in range(12))
        for _ in range(n)
    ]


def test_substr_matching_loop_equals_matcher_and_verifies_once(count_verifications):
    from metaclip_assets.metadata.wordnet import wordnet_entries

    md = wordnet_entries()  # 86,654 real entries, as MetaCLIP's scripts pass them
    texts = _wordnet_texts(md, 3000, seed=14)
    m = Matcher(md)
    got = [substr_matching(t, md) for t in texts]
    assert got == [m.match(t) for t in texts]
    assert sum(map(bool, got)) > 2500  # the texts actually hit entries
    assert len(count_verifications) == 1  # the content was hashed once, not once per text
    as_tuple = tuple(md)
    assert [substr_matching(t, as_tuple) for t in texts[:100]] == got[:100]
    assert len(count_verifications) == 2  # a tuple: one verification, then identity alone
    assert matching._matcher_for(as_tuple) is matching._matcher_for(md)  # equal content shares one matcher


def _long_md() -> list[str]:
    return [f"w{i}" for i in range(1000)]  # > _SAMPLE items: only every 16th one and the last are compared


def test_substr_matching_detects_length_and_sampled_changes(count_verifications):
    md = _long_md()
    step = -(-len(md) // matching._SAMPLE)
    assert substr_matching("a w5 w999", md) == [5, 999]
    md.append("w5")  # appended: length changes
    assert substr_matching("a w5", md) == [5, 1000]
    md.pop()
    assert substr_matching("a w5", md) == [5]
    del md[0]  # removed from the front: every later id shifts
    assert substr_matching("a w5", md) == [4]
    md.insert(0, "w0")
    md[0] = "zero"  # sampled positions replaced in place, same length
    assert substr_matching("a zero", md) == [0]
    md[3 * step] = "three-steps"
    assert substr_matching("a three-steps w5", md) == [5, 3 * step]
    md[-1] = "last"
    assert substr_matching("last w999", md) == [len(md) - 1]
    md.reverse()
    assert substr_matching("last w5", md) == [0, len(md) - 1 - 5]
    assert len(count_verifications) == 8  # one per detected change (the first call included), none per repeat


def test_substr_matching_unsampled_in_place_edit_is_the_documented_caveat(fresh_cache):
    md = _long_md()
    assert substr_matching("a w1", md) == [1]
    md[1] = "one"  # position 1 is not sampled, the length is unchanged: the stale answer documented in the docstring
    assert substr_matching("a one", md) == []
    assert substr_matching("a one", list(md)) == [1]  # a new list object is verified by content
    assert substr_matching("a one", tuple(md)) == [1]
    assert substr_matching("a one", Matcher(md)) == [1]


def test_substr_matching_new_lists_with_other_content(fresh_cache):
    text = "a w3 w7"
    for k in range(6):  # a fresh list each call, as the loop `substr_matching(t, load())` would pass
        got = substr_matching(text, [f"w{(i + k) % 100}" for i in range(100)])
        assert got == sorted([(3 - k) % 100, (7 - k) % 100])
    a, b = _long_md(), _long_md()[::-1]  # same items, same length, other order
    assert substr_matching("w0", a) == [0]
    assert substr_matching("w0", b) == [999]
    assert substr_matching("w0", a) == [0]
    assert len(matching._cache) <= matching._CACHE_SLOTS and len(matching._seen) <= matching._SEEN_SLOTS


def test_substr_matching_threads_never_share_a_matcher(fresh_cache, monkeypatch):
    """More threads with different lists than cache slots: every answer comes from the caller's own list.

    A trace function hands the GIL to another thread at random lines of the cache code, so threads interleave inside
    the fast and the slow path (without it they barely overlap). This catches a cache whose record is written in two
    steps (object, then matcher: wrong answers) and the unlocked OrderedDict of the previous version (KeyError).
    """
    import threading
    import time

    monkeypatch.setattr(matching, "_SAMPLE", 8)  # lists longer than the sample: the sampled check is exercised
    rng = random.Random(5)
    base = _long_md()[:120]
    lists = [rng.sample(base, len(base)) for _ in range(5)] + [base, base]  # the last two threads share one list
    texts = [" ".join(rng.sample(base, 6)) for _ in range(40)]
    expected = [[Matcher(md).match(t) for t in texts] for md in lists]
    errors = []
    cache_code = {matching._matcher_for.__code__, matching._verified_matcher.__code__}

    def yield_at_random_lines(frame, event, arg):
        if event == "line" and rng.random() < 0.5:
            time.sleep(0)  # releases the GIL
        return yield_at_random_lines

    def tracer(frame, event, arg):
        return yield_at_random_lines if frame.f_code in cache_code else None

    def work(k: int) -> None:
        try:
            for r in range(10):
                for t, want in zip(texts, expected[k], strict=True):
                    got = substr_matching(t, lists[k])
                    if got != want:
                        errors.append((k, r, t, got, want))
        except Exception as e:  # reported by the assertion below
            errors.append((k, repr(e)))

    threading.settrace(tracer)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(lists))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        threading.settrace(None)
    assert not errors, errors[:3]
    assert len(matching._cache) <= matching._CACHE_SLOTS and len(matching._seen) <= matching._SEEN_SLOTS


# ---- equivalence with the reference on generated texts ---------------------------------------------------------------

_WORDS = [
    "dog",
    "Dog",
    "hot",
    "cat",
    "New",
    "York",
    "City",
    "a",
    "b",
    "é",
    "e\u0301",
    "狗",
    "U",
    "S",
    "3",
    "5",
    "000",
    "1",
    "bowl",
    "x",
]
_SEPS = [
    " ",
    " ",
    " ",
    "  ",
    ",",
    ".",
    ";",
    ":",
    "?",
    "!",
    "`",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "-",
    "'",
    "(",
    ")",
    "\u00a0",
    "",
    "/",
]


def _random_metadata(rng: random.Random) -> list[str]:
    md = set(_WORDS)
    while len(md) < 150:
        n = rng.choice([1, 2, 2, 3])
        md.add(rng.choice([" ", " ", "-", "'", ".", ". ", ", "]).join(rng.choice(_WORDS) for _ in range(n)))
    out = sorted(md)
    rng.shuffle(out)
    return out


def _random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 12)):
        parts.append(rng.choice(_WORDS))
        parts.append(rng.choice(_SEPS))
    return "".join(parts)


def test_matches_reference_on_random_texts():
    rng = random.Random(20240601)
    md = _random_metadata(rng)
    texts = [_random_text(rng) for _ in range(2000)]
    m = Matcher(md)
    offsets, ids = m.match_batch(texts)
    nonempty = 0
    for k, t in enumerate(texts):
        ref = reference(t, md)
        assert ids[offsets[k] : offsets[k + 1]].tolist() == ref, repr(t)
        assert m.match(t) == ref
        nonempty += bool(ref)
    assert nonempty > 1000  # the generator actually exercises matches
    assert len(ids) == offsets[-1]


def test_match_pool_parallel_equals_serial():
    rng = random.Random(7)
    md = _random_metadata(rng)
    texts = [_random_text(rng) for _ in range(3000)]
    m = Matcher(md)
    serial = m.match_batch(texts)
    parallel = match_pool_parallel(texts, m, workers=2, chunk_size=700)
    assert parallel[0].dtype == np.int64 and parallel[1].dtype == np.uint32
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[1], serial[1])
    assert matching._worker_matcher is None


def test_matcher_pool_equals_serial():
    """Spawned workers with their own token tables: same CSR as one process, chunk order kept, empty input too."""
    rng = random.Random(8)
    md = _random_metadata(rng)
    texts = [_random_text(rng) for _ in range(3000)] + ["\x00 nul", "lone \ud800 surrogate"]
    serial = Matcher(md).match_batch(texts)
    with matching.MatcherPool(md, workers=2, chunk_size=700) as pool:
        got = pool.match_batch(texts)
        empty = pool.match_batch([])
    assert got[0].dtype == np.int64 and got[1].dtype == np.uint32
    np.testing.assert_array_equal(got[0], serial[0])
    np.testing.assert_array_equal(got[1], serial[1])
    assert empty[0].tolist() == [0] and empty[1].size == 0


# ---- real data: 5,000 LAION alt-texts against the 86,654 WordNet entries ---------------------------------------------


@pytest.fixture(scope="module")
def laion_and_wordnet(realdata, shared_metaclip):
    import polars as pl

    df = pl.read_parquet(realdata / "laion-alttext-10k" / "laion_alttext_5000.parquet", columns=["TEXT"])
    texts = df["TEXT"].fill_null("").to_list()
    md = json.loads((shared_metaclip / "wordnet_part_86654.json").read_text(encoding="utf-8"))
    assert len(md) == 86654 and len(texts) == 5000
    return texts, md


@pytest.mark.realdata
def test_real_texts_match_pyahocorasick_reference(laion_and_wordnet):
    import ahocorasick

    texts, md = laion_and_wordnet
    # Upstream's substr_matching_ahocorasick formulation, with int values.
    automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
    for i, e in enumerate(md):
        automaton.add_word(f" {e} ", i)
    automaton.make_automaton()

    offsets, ids = Matcher(md).match_batch(texts)
    with_match = 0
    for k, t in enumerate(texts):
        ref = sorted({i for _, i in automaton.iter(spacing(t))})
        assert ids[offsets[k] : offsets[k + 1]].tolist() == ref, repr(t)
        with_match += bool(ref)
    print(f"\nLAION 5000 x WordNet 86,654: {with_match} texts match >= 1 entry, {len(ids)} (text, entry) pairs")
    assert with_match > 1000  # 2,530 when written: a collapse here means the matcher lost matches


@pytest.mark.realdata
def test_real_texts_match_plain_loop_subset(laion_and_wordnet):
    texts, md = laion_and_wordnet
    subset = texts[:: len(texts) // 100][:100]
    m = Matcher(md)
    padded = [f" {e} " for e in md]
    for t in subset:
        s = spacing(t)
        assert m.match(t) == [i for i, p in enumerate(padded) if p in s], repr(t)


# ---- token-join engine (default of match_batch) vs the plain loop on its edge cases ---------------------------------


def _batch_lists(m: Matcher, texts: list[str]) -> list[list[int]]:
    offsets, ids = m.match_batch(texts)
    assert offsets.dtype == np.int64 and ids.dtype == np.uint32 and len(offsets) == len(texts) + 1
    return [ids[offsets[k] : offsets[k + 1]].tolist() for k in range(len(texts))]


def _check_batch(md: list[str], texts: list[str]) -> Matcher:
    m = Matcher(md)
    expected = [reference(t, md) for t in texts]
    assert _batch_lists(m, texts) == expected  # the compiled token table (_native.token_match)
    native, matching._native = matching._native, None
    try:  # the polars token joins, used where the compiled module is not built
        assert _batch_lists(Matcher(md), texts) == expected
    finally:
        matching._native = native
    off, ids = m._match_batch_automaton(texts)  # the automaton engine agrees too
    assert [ids[off[k] : off[k + 1]].tolist() for k in range(len(texts))] == expected
    return m


_SPACY_MD = [
    "a",
    "b",
    "a b",
    "a  b",
    " a",
    "a ",
    " ",
    "  ",
    "   ",
    " a b ",
    "b  ",
    "  a",
    "x y z",
    "y",
    "a\tb",
    "a.b",
    "a . b",
    ". b",
    "é",
    "a\x01b",
]
_SPACY_TEXTS = [
    "",
    " ",
    "  ",
    "    ",
    "a b",
    "a  b",
    "a   b",
    " a b ",
    "  a  b  ",
    "x y z",
    "x  y z",
    "x y  z",
    "a\tb",
    "a\t\tb",
    "a\r\nb",
    "a.b",
    "a. b",
    "a .b",
    "a\x01b",
    "é",
    "e\u0301",
    "\t",
    "\n\n",
    "b   ",
    "a" * 3,
    "x y z y",
    "a a a",
    " a",
    "a ",
]


def test_token_engine_spaces_in_texts_and_entries():
    m = _check_batch(_SPACY_MD, _SPACY_TEXTS)
    # The empty token between two spaces breaks "a b"; "a  b" and "a " match (" a  " is in " a  b ").
    assert m.match_batch(["a  b"])[1].tolist() == [0, 1, 3, 5]
    assert m.match_batch(["  "])[1].tolist() == [6, 7]  # 4 spaces hold " " padded (3) and "  " padded (4)


def test_token_engine_only_spaces_and_empty_texts():
    md = [" ", "  ", "   ", "dog"]
    texts = ["", " ", "  ", "   ", "    ", "\t", "\r\n", " \t \n ", "dog", " dog  dog "]
    _check_batch(md, texts)
    assert _batch_lists(Matcher(md), ["   "]) == [[0, 1, 2]]  # 5 spaces hold "   ", "    " and "     "


def test_token_engine_nul_and_surrogate_texts_fall_back_per_text():
    md = ["dog", "\udc80", "hot dog", "a\x00b", "x"]
    texts = ["hot dog", "a\x00b", "dog \udc80", "\x00", "x \x00 x", "dog", "\udc80\udc80", "x"]
    _check_batch(md, texts)
    md2 = ["dog", "\udc80", "hot dog", "x"]  # no NUL entry: token engine for clean texts, automaton for the rest
    _check_batch(md2, texts)
    assert Matcher(md2)._token_ok and not Matcher(md)._token_ok


def test_token_engine_duplicates_and_batch_boundaries(monkeypatch):
    monkeypatch.setattr(matching, "_TOKEN_BATCH", 3)
    md = ["dog", "hot dog", "dog", " dog", "hot dog", "dog"]
    texts = ["hot dog", "", "  dog", "dog\x00", "hot  dog", "dog dog", "hot dog hot dog"]
    _check_batch(md, texts)


def test_token_engine_random_spaced_entries():
    rng = random.Random(11)
    words = ["a", "b", "c", "", "é", "."]
    md = sorted({" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(300)} - {""})
    pieces = ["a", "b", "c", " ", " ", "  ", ".", "\t", "é", ""]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))) for _ in range(1500)]
    _check_batch(md, texts)


def test_match_builds_engines_lazily():
    m = Matcher(["dog", "hot dog"])
    m.match_batch(["hot dog"])
    # batch users never pay the automaton build (nor the polars tables when the compiled table serves)
    assert m._ac_obj is None and m._native_obj is not None and m._levels_obj is None
    m2 = Matcher(["dog"])
    assert m2.match("dog") == [0] and m2._levels_obj is None


def test_match_batch_threads_gives_the_same_csr(monkeypatch):
    monkeypatch.setattr(matching, "_TOKEN_BATCH", 7)  # several batches, each split over the threads
    rng = random.Random(5)
    md = ["dog", "hot dog", "a b", "é", "cat", " dog"]
    texts = [
        " ".join(rng.choice(["dog", "hot", "a", "b", "é", "cat", ""]) for _ in range(rng.randint(0, 6)))
        for _ in range(50)
    ] + ["dog \udc80"]  # lone surrogate: that batch goes the per-text route
    m = Matcher(md)
    off1, ids1 = m.match_batch(texts)
    for threads in (2, 3, 8):
        off, ids = m.match_batch(texts, threads=threads)
        assert np.array_equal(off, off1) and np.array_equal(ids, ids1)
    assert m.parallel_ok(2) and not m.parallel_ok(1)
    assert not Matcher(["a\x00b"]).parallel_ok(2)  # automaton-only lists run one thread
    with pytest.raises(ValueError, match="threads"):
        m.match_batch(texts, threads=0)
