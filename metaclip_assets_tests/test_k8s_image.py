"""The training image (k8s/Dockerfile.train) runs both pods `mode: k8s` launches: `python -m
metaclip_assets.training` and `python -m metaclip_assets.evaluation`. Every project module they can import
(module-level and lazy imports inside functions) must be among the files the Dockerfile COPYs, and every
third-party package they import must come with what it pip-installs. No Docker needed: the Dockerfile is parsed.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import shlex
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "k8s" / "Dockerfile.train"
ENTRY_POINTS = ("metaclip_assets.training", "metaclip_assets.evaluation")  # the pods' `python -m` modules
PACKAGE = "metaclip_assets"


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if i.strip()]


def copied() -> list[Path]:
    """Repository paths the COPY lines bring into the image (sources only; the last word is the destination)."""
    out = []
    for ins in instructions():
        if ins.split()[0].upper() == "COPY":
            words = [w for w in shlex.split(ins)[1:] if not w.startswith("--")]
            out += [REPO / w for w in words[:-1]]
    return out


def module_file(name: str) -> Path | None:
    path = REPO / name.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports(path: Path, module: str) -> tuple[set[str], set[str]]:
    """(project modules, third-party top-level names) a file imports anywhere in it, functions included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours, theirs = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from pkg import name`: name is a submodule when a file says so, else an attribute of pkg
            names = [base] + [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == PACKAGE:
                ours.add(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                theirs.add(top)
    return ours, theirs


def closure() -> tuple[dict[str, Path], set[str]]:
    """Every project module the entry points can import (with the packages above each), and the third-party
    top-level names those modules import."""
    todo = [f"{e}.__main__" for e in ENTRY_POINTS]
    seen: dict[str, Path] = {}
    third_party: set[str] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ first
            mod = ".".join(parts[:i])
            if mod in seen:
                continue
            path = module_file(mod)
            assert path is not None, f"{mod} is imported but no file defines it"
            seen[mod] = path
            ours, theirs = imports(path, mod)
            todo += sorted(ours)
            third_party |= theirs
    return seen, third_party


def pip_installed() -> set[str]:
    """Distributions the image pip-installs, with everything they require (this environment's metadata)."""
    pins = set()
    for ins in instructions():
        if ins.split()[0].upper() == "RUN" and "pip install" in ins:
            pins |= {re.split(r"[=<>!~\[]", w)[0] for w in shlex.split(ins) if "==" in w}
    todo, out = [canonical(p) for p in pins], set()
    while todo:
        dist = todo.pop()
        if dist in out:
            continue
        out.add(dist)
        for req in md.requires(dist) or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(canonical(r.name))
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_holds_every_module_the_training_and_evaluation_pods_import():
    modules, _ = closure()
    assert {"metaclip_assets.evaluation.runner", "metaclip_assets.training.loop", "metaclip_assets.settings"} <= set(
        modules
    ), "the import scan misses modules it must find: it is broken"
    sources = copied()
    missing = sorted(
        str(p.relative_to(REPO)) for p in modules.values() if not any(p == s or s in p.parents for s in sources)
    )
    assert not missing, f"{DOCKERFILE.relative_to(REPO)} does not COPY what the pods import: {missing}"
    assert not any(m.startswith(("metaclip_assets.defs", "metaclip_assets.sample")) for m in modules)


def test_the_image_installs_every_package_the_pods_import():
    _, third_party = closure()
    assert {"torch", "open_clip", "webdataset", "dagster_pipes", "matplotlib"} <= third_party
    assert "dagster" not in third_party and "polars" not in third_party  # the image must stay free of them
    provided = pip_installed()
    by_module = md.packages_distributions()
    missing = {m: by_module.get(m) for m in third_party if not {canonical(d) for d in by_module.get(m, [])} & provided}
    assert not missing, f"{DOCKERFILE.relative_to(REPO)} installs nothing that provides {missing}"
