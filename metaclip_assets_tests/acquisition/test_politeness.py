"""Politeness against a real server on 127.0.0.1: robots.txt (RFC 9309 via protego), per-host spacing,
Crawl-delay, Retry-After and the User-Agent. Times are taken at the server, when each request arrives."""

from __future__ import annotations

import email.utils
import threading
import time
import urllib.robotparser
from http.server import BaseHTTPRequestHandler

import pytest

from metaclip_assets.acquisition import robots
from metaclip_assets.acquisition.fetch_http import parse_retry_after, user_agent_for
from metaclip_assets.acquisition.source import REASONS, TRANSIENT
from metaclip_assets_tests.acquisition import _support as sup
from metaclip_assets_tests.acquisition import test_fetch_http as base

JPEG, fetcher = base.JPEG, base.fetcher
server, connections = base.server, base.connections  # the same local server and loopback-only guard

ROBOTS = b"""User-agent: *
Disallow: /

User-agent: metaclip-assets
Disallow: /img/
Allow: /img/public/
Disallow: /*.png$
"""


def polite(**kw):
    return fetcher(respect_robots=True, **kw)


def robots_txt(body: bytes) -> sup.Route:
    return lambda h: sup.send(h, body, "text/plain")


def stamped(route: sup.Route, times: list[float]) -> sup.Route:
    """`route`, recording when each request reached the server."""

    def wrapped(h: BaseHTTPRequestHandler) -> None:
        times.append(time.monotonic())
        route(h)

    return wrapped


def fetch_all(f, urls: list[str], threads: int = 4) -> list:
    results: list = [None] * len(urls)

    def work(i: int) -> None:
        results[i] = f.fetch(urls[i])

    pool = [
        threading.Thread(target=lambda k=k: [work(i) for i in range(k, len(urls), threads)]) for k in range(threads)
    ]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    return results


def gaps(times: list[float]) -> list[float]:
    times = sorted(times)
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_reasons_are_in_the_vocabulary():
    assert {"robots_disallowed", "robots_unreachable", "rate_limited"} <= REASONS.keys()
    assert "robots_disallowed" not in TRANSIENT and {"robots_unreachable", "rate_limited"} <= TRANSIENT


def test_disallow_with_wildcards_and_longest_match(server, connections):
    server.routes["/robots.txt"] = robots_txt(ROBOTS)
    paths = {"/img/public/a.jpg": True, "/img/secret.jpg": False, "/photos/b.png": False, "/photos/b.jpg": True}
    for path in paths:
        server.image(path, JPEG)
    f = polite()
    got = {path: f.fetch(server.url(path)) for path in paths}
    assert {p: r.ok for p, r in got.items()} == paths
    assert {got[p].reason_code for p, ok in paths.items() if not ok} == {"robots_disallowed"}
    assert all(server.hits[p] == int(ok) for p, ok in paths.items())  # a disallowed image is never requested
    assert server.hits["/robots.txt"] == 1
    # the reason for protego: the standard library takes the first matching line and knows no wildcards
    std = urllib.robotparser.RobotFileParser()
    std.parse(ROBOTS.decode().splitlines())
    assert not std.can_fetch("metaclip-assets", server.url("/img/public/a.jpg"))
    assert std.can_fetch("metaclip-assets", server.url("/photos/b.png"))


def test_robots_fetched_once_per_host_for_many_images(server, connections):
    server.routes["/robots.txt"] = robots_txt(b"User-agent: *\nAllow: /\n")
    urls = [server.image(f"/i/{i}.jpg", JPEG) for i in range(12)]
    other = sup.ImageServer().start()  # another port is another robots.txt (RFC 9309: scheme, host and port)
    try:
        other.routes["/robots.txt"] = robots_txt(b"User-agent: *\nDisallow: /i/\n")
        other_urls = [other.image(f"/i/{i}.jpg", JPEG) for i in range(4)]
        f = polite()
        results = fetch_all(f, urls + other_urls, threads=6)
    finally:
        other.stop()
    assert all(r.ok for r in results[:12]) and {r.reason_code for r in results[12:]} == {"robots_disallowed"}
    assert (server.hits["/robots.txt"], other.hits["/robots.txt"], f.robots.loads, len(f.robots)) == (1, 1, 2, 2)
    assert sum(other.hits[f"/i/{i}.jpg"] for i in range(4)) == 0


@pytest.mark.parametrize("code", [500, 503, 429])
def test_robots_server_error_disallows_the_host_for_the_run(server, connections, code):
    server.routes["/robots.txt"] = sup.status(code)
    urls = [server.image(f"/{i}.jpg", JPEG) for i in range(3)]
    f = polite(max_retries=1)
    results = [f.fetch(u) for u in urls]
    assert {(r.reason_code, r.attempts) for r in results} == {("robots_unreachable", 1)}
    assert f"robots.txt http_{'429' if code == 429 else '5xx'}" in results[0].detail
    assert server.hits["/robots.txt"] == 2  # one retry, then the verdict holds for every image of the run
    assert sum(server.hits[f"/{i}.jpg"] for i in range(3)) == 0


@pytest.mark.parametrize("code", [404, 403, 401, 410])
def test_robots_4xx_allows_everything(server, connections, code):
    server.routes["/robots.txt"] = sup.status(code)
    assert polite().fetch(server.image("/a.jpg", JPEG)).ok


def test_robots_unreachable_host(connections):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = polite(max_retries=1).fetch(f"http://127.0.0.1:{port}/a.jpg")
    assert r.reason_code == "robots_unreachable" and "connection_error" in r.detail
    assert connections == ["127.0.0.1", "127.0.0.1"]  # robots.txt and its retry; never the image


def test_robots_redirects_and_ssrf_guard(server, connections):
    server.routes["/robots.txt"] = sup.redirect("/real-robots.txt")
    server.routes["/real-robots.txt"] = robots_txt(b"User-agent: *\nDisallow: /no/\n")
    server.image("/no/a.jpg", JPEG)
    assert polite().fetch(server.url("/no/a.jpg")).reason_code == "robots_disallowed"
    # robots.txt pointing at the metadata service: never connected, and the host counts as unreachable
    server.routes["/robots.txt"] = sup.redirect("http://169.254.169.254/latest/meta-data/")
    server.image("/a.jpg", JPEG)
    r = polite().fetch(server.url("/a.jpg"))
    assert r.reason_code == "robots_unreachable" and "blocked_address" in r.detail
    # an image redirected to a forbidden address fails as the guard says, before any robots.txt there
    server.routes["/robots.txt"] = robots_txt(b"")
    server.routes["/go"] = sup.redirect("http://10.0.0.1/x.jpg")
    assert polite().fetch(server.url("/go")).reason_code == "blocked_address"
    assert set(connections) == {"127.0.0.1"}


def test_robots_read_up_to_500_kib(server, connections):
    body = b"User-agent: *\nDisallow: /early/\n#" + b"x" * robots.MAX_ROBOTS_BYTES + b"\nDisallow: /late/\n"
    server.routes["/robots.txt"] = robots_txt(body)
    f = polite(max_bytes=100_000)  # the image byte cap does not apply to robots.txt
    assert f.fetch(server.image("/early/a.jpg", JPEG)).reason_code == "robots_disallowed"
    assert f.fetch(server.image("/late/a.jpg", JPEG)).ok  # past 500 KiB: not read (RFC 9309 2.5)


def test_user_agent_names_project_and_contact(server, connections):
    server.routes["/robots.txt"] = robots_txt(b"")
    contact = "https://example.org/our-crawler"
    assert polite(contact_url=contact).fetch(server.image("/a.jpg", JPEG)).ok
    agents = {path: h["User-Agent"] for path, h in server.requests}
    assert agents["/robots.txt"] == agents["/a.jpg"] == user_agent_for(contact)
    assert agents["/a.jpg"].startswith("metaclip-assets/") and f"(+{contact};" in agents["/a.jpg"]


def test_min_interval_between_requests_to_one_host(server, connections):
    times: list[float] = []
    server.routes["/robots.txt"] = stamped(robots_txt(b""), times)
    urls = []
    for i in range(5):
        server.routes[f"/{i}.jpg"] = stamped(lambda h: sup.send(h, JPEG), times)
        urls.append(server.url(f"/{i}.jpg"))
    results = fetch_all(polite(min_host_interval=0.15, max_per_host=4), urls, threads=5)
    assert all(r.ok for r in results) and len(times) == 6
    assert min(gaps(times)) >= 0.1, gaps(times)  # 4 connections allowed, yet one request per 0.15 s (+ jitter)


def test_crawl_delay_from_robots(server, connections):
    times: list[float] = []
    server.routes["/robots.txt"] = robots_txt(b"User-agent: metaclip-assets\nCrawl-delay: 0.25\n")
    urls = []
    for i in range(4):
        server.routes[f"/{i}.jpg"] = stamped(lambda h: sup.send(h, JPEG), times)
        urls.append(server.url(f"/{i}.jpg"))
    results = fetch_all(polite(), urls, threads=4)
    assert all(r.ok for r in results) and min(gaps(times)) >= 0.18, gaps(times)
    # a delay longer than we hold a worker: the first image goes, the rest are rate_limited, never requested
    slow = sup.ImageServer().start()
    try:
        slow.routes["/robots.txt"] = robots_txt(b"User-agent: *\nCrawl-delay: 60\n")
        f = polite(max_wait=0.5)
        got = [f.fetch(slow.image(f"/{i}.jpg", JPEG)) for i in range(3)]
    finally:
        slow.stop()
    assert [r.reason_code for r in got] == ["ok", "rate_limited", "rate_limited"]
    assert [r.attempts for r in got[1:]] == [1, 1] and slow.hits["/1.jpg"] == slow.hits["/2.jpg"] == 0


def test_retry_after_is_honoured_for_the_host(server, connections):
    times: list[float] = []
    state = {"n": 0}

    def once_busy(h: BaseHTTPRequestHandler) -> None:
        times.append(time.monotonic())
        state["n"] += 1
        if state["n"] == 1:
            sup.send(h, b"busy", "text/plain", status=503, headers={"Retry-After": "1"})
        else:
            sup.send(h, JPEG)

    server.routes["/robots.txt"] = robots_txt(b"")
    server.routes["/a.jpg"] = once_busy
    r = polite(max_retries=2, max_backoff=0.05).fetch(server.url("/a.jpg"))
    assert (r.ok, r.attempts) == (True, 2) and times[1] - times[0] >= 0.95  # not the 0.05 s backoff


def test_retry_after_past_max_wait_holds_back_the_host(server, connections):
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)  # the HTTP-date form
    server.routes["/robots.txt"] = robots_txt(b"")
    server.routes["/busy.jpg"] = sup.status(429, {"Retry-After": later})
    server.image("/b.jpg", JPEG)
    f = polite(max_retries=3, max_wait=5.0)
    r = f.fetch(server.url("/busy.jpg"))
    assert (r.reason_code, r.status, r.attempts) == ("rate_limited", 429, 1) and "Retry-After" in r.detail
    other = f.fetch(server.url("/b.jpg"))  # same host: not asked while it wants us gone
    assert (other.reason_code, server.hits["/b.jpg"], server.hits["/busy.jpg"]) == ("rate_limited", 0, 1)


def test_parse_retry_after():
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None


def test_robots_cache_is_bounded_and_loads_once():
    cache = robots.RobotsCache(max_hosts=2)
    calls: list[str] = []

    def load(key: str):
        def run() -> robots.Robots:
            calls.append(key)
            time.sleep(0.05)
            return robots.ALLOW_ALL

        return run

    threads = [threading.Thread(target=cache.get, args=("a", load("a"))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert calls == ["a"]
    cache.get("b", load("b"))
    cache.get("c", load("c"))  # drops "a", the least recently used
    cache.get("a", load("a"))
    assert calls == ["a", "b", "c", "a"] and len(cache) == 2
    with pytest.raises(RuntimeError):
        cache.get("d", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cache.get("d", load("d")) is robots.ALLOW_ALL  # a failed load caches nothing


def test_robots_verdicts():
    assert robots.after_failure("http_4xx") is robots.ALLOW_ALL
    assert robots.after_failure("too_many_redirects") is robots.ALLOW_ALL
    for reason in ("http_5xx", "http_429", "timeout", "connection_error", "blocked_address"):
        assert robots.after_failure(reason).denied == "robots_unreachable"
    rules = robots.parse(b"User-agent: metaclip-assets\nRequest-rate: 1/4\nCrawl-delay: 2\n", "metaclip-assets")
    assert rules.delay == 4.0 and rules.allows("http://h/x.jpg", "metaclip-assets")
