"""Progress lines for a run log while long work runs: at most one every `PROGRESS_EVERY_S` seconds.

Shared by the crawl pool read, the image acquisition and the WAT downloads. Imports nothing of the package.
"""

from __future__ import annotations

import time

PROGRESS_EVERY_S = 5.0


class Every:
    """`due()` is true at most once per `seconds` (the first time only after `seconds`, unless `at_once`);
    `due(force=True)` is always true. A true answer restarts the clock."""

    def __init__(self, seconds: float = PROGRESS_EVERY_S, *, at_once: bool = False) -> None:
        self.seconds = seconds
        self.last = float("-inf") if at_once else time.monotonic()

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self.last >= self.seconds:
            self.last = now
            return True
        return False
