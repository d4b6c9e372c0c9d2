"""The house rules, checked on the source (AST only, nothing imported, no extra dependency):

(a) no import cycle among `metaclip_assets` modules (imports that run when a module loads);
(b) plain modules (all but `defs/`, definitions.py and cli.py) never import Dagster, nor `defs`/definitions/cli;
(c) each package keeps the contract its docstring states ("Must not import ..."), encoded in CONTRACTS below;
(d) `METACLIP_*` environment variables are read in settings.py only;
(e) paths under the data root are built in layout.py only.

Each checker is a plain function over a source tree; the tests at the bottom run it on a small tree that breaks the
rule, so every rule is shown to be able to fail.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "metaclip_assets"

# ---- imports --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name of the importing module
    target: str  # dotted name of what it imports: the module itself when `from M import name` names a module
    names: tuple[str, ...]  # the names of a `from M import ...` (empty for `import M`)
    path: Path
    line: int
    at_load: bool  # runs when the importer is imported: not inside a function, not under `if TYPE_CHECKING:`

    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def module_files(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} of every .py under root/package (a package is named by its __init__.py)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at load (class bodies do; function bodies do not)."""

    def visit(node: ast.AST, at_load: bool) -> Iterator:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, at_load
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from visit(child, False)
            else:
                yield from visit(child, at_load)

    yield from visit(tree, True)


def imports_of(module: str, path: Path, known: Iterable[str]) -> list[Import]:
    """The imports of one module, relative ones resolved to absolute names."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found = []
    for node, at_load in _walk_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, (), path, node.lineno, at_load))
            continue
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        names = tuple(alias.name for alias in node.names)
        submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
        for target in submodules or [base]:
            found.append(Import(module, target, names, path, node.lineno, at_load))
    return found


def package_imports(root: Path, package: str) -> list[Import]:
    files = module_files(root, package)
    return [imp for module, path in files.items() for imp in imports_of(module, path, files)]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# ---- (a) cycles -----------------------------------------------------------------------------------------------


def import_cycles(root: Path, package: str) -> list[list[str]]:
    """Cycles among the package's modules over the imports that run at load, one example path per strongly
    connected group: [a, b, ..., a]."""
    files = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for imp in package_imports(root, package):
        if imp.at_load and imp.target in files and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    # Tarjan's strongly connected components (iterative enough for a few hundred modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    members, start = set(group), group[0]
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth first from start until an edge leads back to it
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return group


# ---- (b) plain modules know nothing of Dagster ----------------------------------------------------------------

DAGSTER_LIBS = (
    "dagster",
    "dagster_k8s",
    "dagster_postgres",
    "dagster_webserver",
    "dagster_graphql",
)  # not dagster_pipes
WIRING = ("defs", "definitions", "cli")  # the Dagster side of the package


def is_plain(module: str, package: str) -> bool:
    return not any(_within(module, f"{package}.{w}") for w in WIRING)


def upward_imports(root: Path, package: str) -> list[str]:
    """Imports of Dagster or of the wiring by plain modules, wherever they stand (function bodies too)."""
    offenders = []
    for imp in package_imports(root, package):
        if not is_plain(imp.importer, package):
            continue
        if imp.target.split(".")[0] in DAGSTER_LIBS or not is_plain(imp.target, package):
            offenders.append(f"{imp.where()}: {imp.importer} imports {imp.target}")
    return offenders


# ---- (c) per-package contracts --------------------------------------------------------------------------------
# What each plain package or module must not import (relative to the package), from its docstring and the layering
# crawl, metadata < curation < acquisition < training < evaluation; `sample` writes crawl files and imports none
# of them. "*" means: nothing of the package outside itself and the names in ALLOWED.
JOBS = ("crawl", "metadata", "curation", "acquisition", "training", "evaluation", "export", "sample")
CONTRACTS: dict[str, tuple[str, ...]] = {
    "crawl": ("metadata", "curation", "acquisition", "training", "evaluation", "sample"),
    "metadata": ("crawl", "curation", "acquisition", "training", "evaluation", "sample"),
    "curation": ("acquisition", "training", "evaluation", "sample"),
    "acquisition": ("training", "evaluation", "sample"),
    "training": ("evaluation", "sample"),
    "evaluation": ("sample",),
    "export": ("crawl", "metadata", "curation", "acquisition", "evaluation", "sample"),
    "sample": tuple(j for j in JOBS if j != "sample"),
    "sample.warc_writer": ("crawl",),
    "_native": ("*",),
    "settings": ("*",),
    "layout": ("*",),
}
ALLOWED: dict[str, tuple[str, ...]] = {"layout": ("settings",)}
# MetaCLIP users import the pool readers from `curation` (its facade); exactly these names come from `crawl`.
CURATION_FACADE = {"metaclip_assets.crawl.build": {"build_pool", "read_source_file"}}


def contract_violations(root: Path, package: str, contracts=None, allowed=None) -> list[str]:
    contracts = CONTRACTS if contracts is None else contracts
    allowed = ALLOWED if allowed is None else allowed
    offenders = []
    for imp in package_imports(root, package):
        if not _within(imp.target, package):
            continue
        for owner, forbidden in contracts.items():
            owner_name = f"{package}.{owner}"
            if not _within(imp.importer, owner_name) or _within(imp.target, owner_name):
                continue
            if "*" in forbidden:
                bad = imp.target != package and not any(
                    _within(imp.target, f"{package}.{a}") for a in allowed.get(owner, ())
                )
            else:
                bad = any(_within(imp.target, f"{package}.{f}") for f in forbidden)
            if bad:
                offenders.append(f"{imp.where()}: {imp.importer} imports {imp.target} (contract of {owner})")
    return offenders


def facade_imports(root: Path, package: str, facade: str, lower: str) -> dict[str, set[str]]:
    """{module of `lower`: names} that the `facade` package's __init__ imports from it."""
    found: dict[str, set[str]] = {}
    files = module_files(root, package)
    for imp in imports_of(f"{package}.{facade}", files[f"{package}.{facade}"], files):
        if _within(imp.target, f"{package}.{lower}"):
            found.setdefault(imp.target, set()).update(imp.names)
    return found


def docstring_forbids(path: Path) -> set[str]:
    """The `names` in the "Must not import ..." sentence of a module docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    match = re.search(r"[Mm]ust not import (.*?)(?:[.:;]\s|$)", doc, re.S)
    return set(re.findall(r"`([a-z_]+)`", match.group(1))) if match else set()


# ---- (d) METACLIP_* read in settings.py only ------------------------------------------------------------------


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _literal_text(node: ast.expr) -> str | None:
    """A string literal's text; an f-string's with "{}" for each placeholder; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values
        )
    return None


def env_reads(paths: Iterable[Path], prefix: str = "METACLIP_") -> list[str]:
    """Reads of a `prefix*` environment variable: os.environ[...] (loaded, not assigned), os.environ.get,
    os.environ.setdefault, os.getenv. Building an env dict for a child process is setting, not reading."""
    offenders = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Call) and node.args:
                func = node.func
                if (
                    isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault") and _is_environ(func.value)
                ) or (
                    (isinstance(func, ast.Attribute) and func.attr == "getenv")
                    or (isinstance(func, ast.Name) and func.id == "getenv")
                ):
                    key = node.args[0]
            text = _literal_text(key) if key is not None else None
            if text is not None and text.startswith(prefix):
                offenders.append(f"{_rel(path)}:{node.lineno}: reads {text}")
    return offenders


# ---- (e) data-root paths in layout.py only --------------------------------------------------------------------
# The MLflow store (<data_root>/mlflow/mlflow.db) is kept out of layout.py on purpose: the training image ships only
# training/, whose tracking.py resolves it (see the note in layout.py).
EXTRA_PREFIXES = {"mlflow"}
ALLOWED_PATHS = {("metaclip_assets/training/tracking.py", "mlflow")}
# Files of the data card folder, named by layout.datacard_key's callers as its `name` argument (never joined).
EXTRA_FILE_NAMES = {"datacard.md", "entry_counts_before.json", "acquisition.json", "acquisition.md"}
_FILE_NAME = re.compile(r"^\w[\w.-]*\.(json|parquet|npy|png|md|db|tar)$")  # a name, not a glob or a template


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def layout_vocabulary(layout_path: Path) -> tuple[set[str], set[str]]:
    """(first path segments, artifact file names) of the keys layout.py builds, read from its code: the leading
    segment of each string it returns or defines, the stage names it passes to shard_key and curation_dir, its
    *_DIR constants."""
    tree = ast.parse(layout_path.read_text())
    docstrings = _docstring_ids(tree)
    prefixes, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.endswith("_DIR") for t in node.targets
        ):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                prefixes.add(node.value.value)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("shard_key", "curation_dir")
        ):
            if node.args and isinstance(node.args[0], ast.Constant):
                prefixes.add(node.args[0].value)
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and id(node) not in docstrings):
            text = _literal_text(node)
            if not text:
                continue
            segments = text.split("/")
            if len(segments) > 1 and re.fullmatch(r"[a-z_]+", segments[0]):
                prefixes.add(segments[0])
            if _FILE_NAME.match(segments[-1]):
                names.add(segments[-1])
    return prefixes, names


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_join(node: ast.AST, parent: ast.AST | None) -> bool:
    """A bare string used as a path part: `x / "pool"`, os.path.join(x, "pool"), p.joinpath("pool")."""
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call) and node in parent.args:
        func = parent.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return name == "joinpath" or (name == "join" and len(parent.args) > 1)
    return False


_MLFLOW_CALL = re.compile(r"^(log_\w+|set_tags?|create_run|start_run)$")


def _not_a_path(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """MLflow names: a dict key (metric names), or anything inside a call to an MLflow logging method (tags,
    run names, artifact folders)."""
    parent = parents.get(id(node))
    if isinstance(parent, ast.Dict) and any(k is node for k in parent.keys):
        return True
    if isinstance(parent, ast.DictComp) and parent.key is node:
        return True
    while parent is not None and not isinstance(parent, ast.stmt):
        if (
            isinstance(parent, ast.Call)
            and isinstance(parent.func, ast.Attribute)
            and _MLFLOW_CALL.match(parent.func.attr)
        ):
            return True
        parent = parents.get(id(parent))
    return False


def data_root_paths(paths: Iterable[Path], prefixes: set[str], file_names: set[str], allowed=frozenset()) -> list[str]:
    """String literals and f-strings that build a key under the data root: a path whose first segment (or a segment
    after a placeholder) is a data-root prefix, a path ending in an artifact's file name, or such a bare name joined
    with `/`, os.path.join or joinpath. Docstrings, messages (text with spaces), URLs and MLflow names (metric keys,
    tags, run names, artifact folders) are not paths under the data root."""
    offenders = []
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        docstrings, parents = _docstring_ids(tree), _parents(tree)
        inside_fstring = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if id(node) in docstrings or id(node) in inside_fstring:
                continue
            text = _literal_text(node)
            if text:
                text = re.sub(r"^(sqlite|file):/+", "", text)  # a local file behind a URL is still a path
            if not text or re.search(r"\s", text) or "://" in text or _not_a_path(node, parents):
                continue
            segments = text.split("/")
            hit = None
            if len(segments) > 1:
                if segments[0] in prefixes:
                    hit = segments[0]
                else:  # "{root}/pool/...": a prefix right after a placeholder
                    hit = next((s for a, s in zip(segments, segments[1:]) if a.endswith("{}") and s in prefixes), None)
                if hit is None and segments[-1] in file_names:
                    hit = segments[-1]
            elif (text in prefixes or text in file_names) and _is_join(node, parents.get(id(node))):
                hit = text
            if hit and (_rel(path), hit) not in allowed:
                offenders.append((_rel(path), node.lineno, f"{_rel(path)}:{node.lineno}: {text!r} ({hit})"))
    return [text for *_, text in sorted(offenders)]


# ---- the rules on this repository -----------------------------------------------------------------------------


def _py(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def _fail(offenders: list[str], rule: str) -> None:
    if offenders:
        pytest.fail(f"{rule}:\n  " + "\n  ".join(offenders), pytrace=False)


def test_no_import_cycles():
    cycles = import_cycles(REPO, PACKAGE)
    _fail([" -> ".join(c) for c in cycles], "import cycles among modules (imports at load)")


def test_plain_modules_import_neither_dagster_nor_the_wiring():
    _fail(upward_imports(REPO, PACKAGE), "plain modules importing Dagster or defs/definitions/cli")


def test_packages_keep_their_contracts():
    _fail(contract_violations(REPO, PACKAGE), "imports a package's contract forbids")
    facade = facade_imports(REPO, PACKAGE, "curation", "crawl")
    assert facade == {k: v for k, v in CURATION_FACADE.items()}, facade


def test_contracts_cover_what_the_docstrings_say():
    """Every name a package's docstring forbids is in its row of CONTRACTS (Dagster and defs: the rule above)."""
    files = module_files(REPO, PACKAGE)
    missing = {}
    for owner, forbidden in CONTRACTS.items():
        said = docstring_forbids(files[f"{PACKAGE}.{owner}"]) - {"defs"}
        if "*" not in forbidden and said - set(forbidden):
            missing[owner] = sorted(said - set(forbidden))
    assert not missing, f"docstring names not in CONTRACTS: {missing}"
    assert docstring_forbids(files[f"{PACKAGE}.crawl"]) >= {"curation", "sample"}  # the parser reads them


def test_metaclip_settings_are_read_in_settings_py_only():
    allowed = {REPO / PACKAGE / "settings.py"}
    _fail(env_reads(p for p in _py(PACKAGE, "bench", "metaclip_assets_tests") if p not in allowed), "METACLIP_* reads")


def test_data_root_paths_are_built_in_layout_py_only():
    layout = REPO / PACKAGE / "layout.py"
    prefixes, names = layout_vocabulary(layout)
    assert {"metadata", "pool", "matched", "counts", "balanced", "datacard"} <= prefixes, prefixes
    assert {"datacard.json", "summary.json"} <= names, names
    files = [p for p in _py(PACKAGE) if p != layout]
    offenders = data_root_paths(files, prefixes | EXTRA_PREFIXES, names | EXTRA_FILE_NAMES, ALLOWED_PATHS)
    _fail(offenders, "data-root paths built outside layout.py")


# ---- each checker can fail ------------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_finds_a_cycle_and_ignores_function_level_imports(tmp_path):
    _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from .. import a\n",  # relative, resolved to pkg.a
            "pkg/b.py": "from pkg.sub import c\n\ndef later():\n    from pkg import a\n",
        },
    )
    assert import_cycles(tmp_path, "pkg") == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    (tmp_path / "pkg/sub/c.py").write_text("def later():\n    from .. import a\n")
    assert import_cycles(tmp_path, "pkg") == []
    (tmp_path / "pkg/sub/c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import a\n"
    )
    assert import_cycles(tmp_path, "pkg") == []


def test_checker_finds_dagster_and_wiring_in_plain_modules(tmp_path):
    _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/plain.py": "import dagster_pipes\n\ndef f():\n    import dagster as dg\n",
            "pkg/other.py": "from pkg.defs import assets\n",
            "pkg/defs/__init__.py": "import dagster\n",  # the wiring may
            "pkg/defs/assets.py": "from dagster_k8s import PipesK8sClient\n",
            "pkg/cli.py": "from pkg import definitions\n",
            "pkg/definitions.py": "import dagster\n",
        },
    )
    assert upward_imports(tmp_path, "pkg") == [
        f"{tmp_path}/pkg/other.py:1: pkg.other imports pkg.defs.assets",
        f"{tmp_path}/pkg/plain.py:4: pkg.plain imports dagster",
    ]


def test_checker_finds_a_broken_contract(tmp_path):
    _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/settings.py": "",
            "pkg/layout.py": "from pkg import settings\n\ndef f():\n    from pkg.low import x\n",
            "pkg/low/__init__.py": "from pkg.low.x import y\n",
            "pkg/low/x.py": "from ..high import z\n",
            "pkg/high/__init__.py": "from pkg.low import x\n",
        },
    )
    contracts = {"low": ("high",), "layout": ("*",), "high": ("sample",)}
    assert contract_violations(tmp_path, "pkg", contracts, {"layout": ("settings",)}) == [
        f"{tmp_path}/pkg/layout.py:4: pkg.layout imports pkg.low.x (contract of layout)",
        f"{tmp_path}/pkg/low/x.py:1: pkg.low.x imports pkg.high (contract of low)",
    ]
    assert facade_imports(tmp_path, "pkg", "high", "low") == {"pkg.low.x": {"x"}}
    (tmp_path / "pkg/high/__init__.py").write_text('"""High.\n\nMust not import `low`, `x` or Dagster."""\n')
    assert docstring_forbids(tmp_path / "pkg/high/__init__.py") == {"low", "x"}
    assert facade_imports(tmp_path, "pkg", "high", "low") == {}


def test_checker_finds_env_reads_but_not_env_writes(tmp_path):
    _tree(
        tmp_path,
        {
            "reads.py": (
                "import os\nfrom os import environ, getenv\n"
                "a = os.environ['METACLIP_A']\nb = os.environ.get('METACLIP_B', '')\nc = os.getenv(f'METACLIP_{a}')\n"
                "d = environ.setdefault('METACLIP_D', '1')\ne = getenv('METACLIP_E')\n"
            ),
            "writes.py": (
                "import os\nos.environ['METACLIP_A'] = '1'\nenv = {**os.environ, 'METACLIP_B': '2'}\n"
                "env['METACLIP_C'] = '3'\nhome = os.environ.get('HOME')\nos.environ.pop('METACLIP_D', None)\n"
            ),
        },
    )
    found = env_reads([tmp_path / "reads.py", tmp_path / "writes.py"])
    assert [f.split(": ", 1)[1] for f in found] == [
        "reads METACLIP_A",
        "reads METACLIP_B",
        "reads METACLIP_{}",
        "reads METACLIP_D",
        "reads METACLIP_E",
    ]
    assert all(f.startswith(f"{tmp_path}/reads.py:") for f in found)


def test_checker_finds_data_root_paths_and_not_messages(tmp_path):
    layout = _tree(
        tmp_path,
        {
            "layout.py": (
                '"""Keys: e.g. "docs/x.json" in a docstring is not one."""\nCRAWL_DIR = "crawl"\n'
                'def pool_key(s, i, n):\n    return shard_key("pool", s, i, n)\n'
                'def card(s):\n    return f"datacard/{s}/summary.json"\n'
            )
        },
    )
    prefixes, names = layout_vocabulary(layout / "layout.py")
    assert prefixes == {"crawl", "pool", "datacard"} and names == {"summary.json"}
    _tree(
        tmp_path,
        {
            "bad.py": (
                'a = f"pool/{s}/000.parquet"\nb = f"{root}/crawl/{s}"\nc = root / "crawl"\n'
                'd = f"{d}/summary.json"\ne = os.path.join(root, "datacard", s)\n'
            ),
            "fine.py": (
                '"""Writes pool/<snapshot>/ via layout."""\n'
                'log.info(f"wrote pool/{s} in {t} s")\nraise ValueError(f"no files under {root}/crawl")\n'
                'url = "https://data.commoncrawl.org/crawl-data/x"\ngroup = "crawl"\nmetric = f"{name}/top1"\n'
                'name = "summary.json"\n# comment: pool/x\n'
                'm = {f"eval/{k}": v for k, v in x}\nn = {"pool/a": 1}\nmlflow.log_artifact(f, f"pool/{s}")\n'
            ),
        },
    )
    found = data_root_paths([tmp_path / "bad.py", tmp_path / "fine.py"], prefixes, names)
    assert [f.split(": ", 1)[0].rsplit("/", 1)[1] for f in found] == [
        "bad.py:1",
        "bad.py:2",
        "bad.py:3",
        "bad.py:4",
        "bad.py:5",
    ], found
    (tmp_path / "db.py").write_text('uri = f"sqlite:///{root}/mlflow/mlflow.db"\n')
    assert len(data_root_paths([tmp_path / "db.py"], {"mlflow"}, set())) == 1
    assert data_root_paths([tmp_path / "bad.py"], prefixes, names, {(str(tmp_path / "bad.py"), "crawl")}) == [
        f for f in found if "(crawl)" not in f
    ]
