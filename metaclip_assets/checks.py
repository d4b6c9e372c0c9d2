"""The result of an asset check as plain data, so check logic is testable without Dagster.

`defs/results.py` turns a `CheckResult` into Dagster's `AssetCheckResult`; the check names live next to the
logic that computes them (`curation/checks.py`, `acquisition/checks.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    # JSON-able values: lists and dicts are shown as JSON, numbers, strings and booleans as they are
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: Severity = "ERROR"  # a failed ERROR check blocks downstream assets when its spec is blocking
    description: str | None = None
