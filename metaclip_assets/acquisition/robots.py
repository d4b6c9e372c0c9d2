"""robots.txt for the HTTP fetcher: RFC 9309 rules, what a failed robots.txt fetch means, and a per-run cache.

Parsed by protego, not `urllib.robotparser`: the standard library takes the first rule that matches in file order
and knows no `*` or `$`, so `Disallow: /img/` + `Allow: /img/public/` blocks /img/public/a.jpg and
`Disallow: /*.jpg$` blocks nothing. RFC 9309 says the longest match wins (Allow on a tie) and both are patterns.

Knows nothing of sockets: `HttpImageSource` fetches the file (same SSRF guard, deadline and connection limits
as an image) and hands the body, or the reason code of the failure, to `parse` / `after_failure`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from protego import Protego

# RFC 9309 2.5: crawlers MUST parse at least 500 KiB. We read that much and parse it; the rest is ignored.
MAX_ROBOTS_BYTES = 500 * 1024


@dataclass(frozen=True)
class Robots:
    """What one host's robots.txt says for this run."""

    rules: Protego | None = None  # None: every path allowed (unless `denied`)
    denied: str | None = None  # a reason code every URL of the host fails with (robots.txt unreachable)
    detail: str = ""
    delay: float = 0.0  # seconds between requests the site asks for (Crawl-delay, Request-rate)

    def allows(self, url: str, agent: str) -> bool:
        if self.denied is not None:
            return False
        return self.rules is None or self.rules.can_fetch(url, agent)


ALLOW_ALL = Robots()


def parse(body: bytes, agent: str) -> Robots:
    """Rules from a 2xx robots.txt body (cut to MAX_ROBOTS_BYTES; undecodable bytes never match a rule)."""
    rules = Protego.parse(body[:MAX_ROBOTS_BYTES].decode("utf-8", "replace"))
    delay = rules.crawl_delay(agent) or 0.0
    rate = rules.request_rate(agent)
    if rate is not None and rate.requests > 0:
        delay = max(delay, rate.seconds / rate.requests)
    return Robots(rules=rules, delay=max(0.0, float(delay)))


# Fetch failures after which RFC 9309 lets a crawler treat the file as absent (2.3.1.3: 4xx "unavailable";
# 2.3.1.2: more than five redirects). Every other failure (5xx, 429, timeout, refused connection, a redirect
# to a refused address) leaves the file "unreachable", and 2.3.1.4 says: assume complete disallow.
_UNAVAILABLE = frozenset({"http_4xx", "too_many_redirects", "bad_redirect"})


def after_failure(reason: str, detail: str = "") -> Robots:
    """The verdict when fetching robots.txt failed with `reason` (a code of source.REASONS)."""
    if reason in _UNAVAILABLE:
        return ALLOW_ALL
    return Robots(denied="robots_unreachable", detail=f"robots.txt {reason}: {detail}"[:500])


class RobotsCache:
    """Verdicts by (scheme, host, port), least recently used dropped past `max_hosts`.

    One fetch per key: threads asking for a key that is being fetched wait for that fetch instead of sending
    their own. A `load` that raises caches nothing (the next caller tries again)."""

    def __init__(self, max_hosts: int = 10_000) -> None:
        self.max_hosts = max_hosts
        self.loads = 0  # robots.txt fetches started (for tests and stats)
        self._entries: OrderedDict[Hashable, Robots] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Robots]) -> Robots:
        while True:
            with self._lock:
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    return found
                event = self._pending.get(key)
                if event is None:
                    event = self._pending[key] = threading.Event()
                    self.loads += 1
                    break
            event.wait()  # another thread is fetching this host's robots.txt
        try:
            verdict = load()
            with self._lock:
                self._entries[key] = verdict
                while len(self._entries) > self.max_hosts:
                    self._entries.popitem(last=False)
            return verdict
        finally:
            with self._lock:
                self._pending.pop(key, None)
            event.set()

    def __len__(self) -> int:
        return len(self._entries)
