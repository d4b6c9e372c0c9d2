"""The installed environment: our pins agree with open_clip_torch[training]'s, so open_clip's own trainer and ours
run side by side on the same shards (issue 14), and pip sees no conflict."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement


def test_pip_check_is_clean():
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_open_clip_training_extra_is_satisfied():
    """Every requirement of `open_clip_torch[training]` holds for what is installed (webdataset <= 0.2.86 above all:
    newer releases end shards with an eof marker open_clip_train's group_by_keys_nothrow cannot read)."""
    extra = [
        Requirement(r)
        for r in metadata.requires("open_clip_torch") or []
        if Requirement(r).marker is not None and Requirement(r).marker.evaluate({"extra": "training"})
    ]
    assert any(r.name == "webdataset" for r in extra)
    for req in extra:
        installed = metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} does not satisfy {req}"
