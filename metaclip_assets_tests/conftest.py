"""Shared fixtures: locating ../shared (present on the team's machines, absent on a fresh clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaclip_assets import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the checkout; METACLIP_SHARED overrides it (e.g. CI clones elsewhere).
SHARED = settings.shared_dir(REPO_ROOT)


def _shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} not present: real-data test needs ../shared/{name} beside the checkout")
    return path


@pytest.fixture(scope="session")
def realdata() -> Path:
    return _shared_dir("realdata")


@pytest.fixture(scope="session")
def shared_metaclip() -> Path:
    return _shared_dir("metaclip")
