"""Plain results -> Dagster results: the one place check results cross into Dagster types."""

from collections.abc import Sequence

import dagster as dg

from metaclip_assets.checks import CheckResult


def check_result(check: CheckResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check.name,
        passed=check.passed,
        severity=dg.AssetCheckSeverity(check.severity),
        description=check.description,
        metadata=check.metadata,
    )


def materialize_result(
    metadata: dict, checks: Sequence[CheckResult] = (), data_version: str | None = None
) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[check_result(c) for c in checks],
        data_version=dg.DataVersion(data_version) if data_version is not None else None,
    )
