"""The asset graph, written as data and pinned: a change to keys, deps, partitions, checks, resources, jobs, sensors
or schedules shows up here as a diff (in the spirit of dagster-open-platform's test_defs.py).

The snapshot is computed in a fresh interpreter with every METACLIP_* variable removed, because some of them
(the shard count, the backfill mode) shape the graph when the code location loads. After an intended change:

    python -m metaclip_assets_tests.defs.test_definitions --update
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaclip_assets import settings

SNAPSHOT_FILE = Path(__file__).with_name("definitions_snapshot.json")
REPO = Path(__file__).resolve().parents[2]
UPDATE = f"python -m {__spec__.name if __spec__ else 'metaclip_assets_tests.defs.test_definitions'} --update"


def _key(key) -> str:
    return "/".join(key.path)


def _partitions(partitions_def) -> dict | None:
    import dagster as dg

    if partitions_def is None:
        return None
    described: dict = {"type": type(partitions_def).__name__}
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        described["name"] = partitions_def.name
    elif isinstance(partitions_def, dg.StaticPartitionsDefinition):
        described["keys"] = partitions_def.get_partition_keys()
    elif isinstance(partitions_def, dg.MultiPartitionsDefinition):
        described["dimensions"] = {d.name: _partitions(d.partitions_def) for d in partitions_def.partitions_defs}
    return described


def _backfill(policy) -> dict | None:
    if policy is None:
        return None
    return {"type": policy.policy_type.value, "max_partitions_per_run": policy.max_partitions_per_run}


def _automation(condition) -> str | None:
    if condition is None:
        return None
    return condition.label or str(condition)


def _pool(assets_def) -> str | None:
    try:
        return assets_def.op.pool
    except Exception:  # an asset without an op (a spec or an external asset) has no pool
        return None


def _check_specs(specs) -> list[dict]:
    return [
        {"name": c.name, "blocking": c.blocking, "has_description": bool(c.description)}
        for c in sorted(specs, key=lambda c: c.name)
    ]


def describe(defs) -> dict:
    """The definitions as plain, JSON-able data: everything that makes up the graph, nothing that runs it."""
    assets: dict = {}
    for assets_def in defs.assets or []:
        checks_by_key: dict = {}
        for check in assets_def.check_specs:
            checks_by_key.setdefault(check.asset_key, []).append(check)
        for spec in assets_def.specs:
            assets[_key(spec.key)] = {
                "group": spec.group_name,
                "deps": sorted(
                    (
                        {
                            "asset": _key(dep.asset_key),
                            "partition_mapping": type(dep.partition_mapping).__name__
                            if dep.partition_mapping is not None
                            else None,
                        }
                        for dep in spec.deps
                    ),
                    key=lambda d: d["asset"],
                ),
                "partitions": _partitions(spec.partitions_def),
                "backfill_policy": _backfill(assets_def.backfill_policy),
                "automation_condition": _automation(spec.automation_condition),
                "pool": _pool(assets_def),
                "kinds": sorted(spec.kinds),
                "checks": _check_specs(checks_by_key.get(spec.key, [])),
            }
    standalone_checks: dict = {}
    for checks_def in defs.asset_checks or []:
        for check in checks_def.check_specs:
            standalone_checks.setdefault(_key(check.asset_key), []).append(check)
    return {
        "assets": dict(sorted(assets.items())),
        "asset_checks": {k: _check_specs(v) for k, v in sorted(standalone_checks.items())},
        "resources": {k: type(v).__name__ for k, v in sorted((defs.resources or {}).items())},
        "jobs": sorted(
            ({"name": j.name, "selection": str(getattr(j, "selection", None))} for j in defs.jobs or []),
            key=lambda j: j["name"],
        ),
        "sensors": sorted(
            (
                {
                    "name": s.name,
                    "type": type(s).__name__,
                    "default_status": s.default_status.value,
                    "minimum_interval_seconds": s.minimum_interval_seconds,
                }
                for s in defs.sensors or []
            ),
            key=lambda s: s["name"],
        ),
        "schedules": sorted(
            (
                {"name": s.name, "cron": s.cron_schedule, "default_status": s.default_status.value}
                for s in defs.schedules or []
            ),
            key=lambda s: s["name"],
        ),
    }


def as_text(description: dict) -> str:
    return json.dumps(description, indent=2, sort_keys=True) + "\n"


def current_text() -> str:
    """The snapshot of `metaclip_assets.definitions.defs` as it loads with no METACLIP_* variable set."""
    names = {s.name for s in settings.ALL}
    env = {k: v for k, v in os.environ.items() if k not in names}
    proc = subprocess.run(
        [sys.executable, "-m", "metaclip_assets_tests.defs.test_definitions", "--print"],
        cwd=REPO,
        env={**env, "PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def mismatch(expected: str, actual: str) -> str | None:
    """None when the texts agree, else a readable unified diff and how to accept the change."""
    if expected == actual:
        return None
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{SNAPSHOT_FILE.name} (committed)",
            tofile="metaclip_assets.definitions.defs (now)",
        )
    )
    return f"The Dagster definitions changed:\n{diff}\nIf the change is intended, run `{UPDATE}` and commit the file."


def test_definitions_match_the_committed_snapshot(monkeypatch):
    # Set in the parent on purpose: the snapshot must not depend on the caller's environment.
    monkeypatch.setenv(settings.NUM_SHARDS.name, "7")
    monkeypatch.setenv(settings.BACKFILL.name, "per_key")
    expected = SNAPSHOT_FILE.read_text() if SNAPSHOT_FILE.exists() else ""
    problem = mismatch(expected, current_text())
    if problem:
        pytest.fail(problem, pytrace=False)


def test_a_changed_graph_fails_with_a_diff():
    before = {"assets": {"data_card": {"group": "curation", "kinds": ["json"]}}}
    after = {"assets": {"data_card": {"group": "elsewhere", "kinds": ["json"]}}}
    problem = mismatch(as_text(before), as_text(after))
    assert problem is not None and "--update" in problem
    changed = [line[0] + line[1:].strip() for line in problem.splitlines() if line[:1] in "+-" and '"group"' in line]
    assert changed == ['-"group": "curation",', '+"group": "elsewhere",'], problem
    assert mismatch(as_text(before), as_text(before)) is None


def test_definitions_are_loadable():
    import dagster as dg

    from metaclip_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)


def main(argv: list[str]) -> None:
    if "--update" in argv:  # through --print in a fresh interpreter, so this shell's METACLIP_* settings never leak in
        SNAPSHOT_FILE.write_text(current_text())
        print(f"wrote {SNAPSHOT_FILE}")
    elif "--print" in argv:
        from metaclip_assets.definitions import defs

        sys.stdout.write(as_text(describe(defs)))
    else:
        sys.exit(f"usage: {UPDATE} (or --print)")


if __name__ == "__main__":
    main(sys.argv[1:])
