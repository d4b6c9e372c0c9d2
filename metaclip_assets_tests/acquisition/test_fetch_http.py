"""HTTP fetcher against a real server on 127.0.0.1: deadlines, byte cap, retries, opt-outs and SSRF refusals.

Nothing here sends a packet to a non-loopback address: `socket.create_connection` is wrapped to record (and
fail the test on) any connection to something other than 127.0.0.1, and forbidden names are "resolved" by an
injected resolver, never by DNS.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time

import pytest

from metaclip_assets.acquisition import fetch_http
from metaclip_assets.acquisition.fetch_http import DEFAULT_USER_AGENT, HttpImageSource, forbidden_address, opted_out
from metaclip_assets_tests.acquisition import _support as sup


@pytest.fixture
def server():
    srv = sup.ImageServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def connections(monkeypatch):
    """Every address the fetcher connects to; anything but loopback fails the test before connecting."""
    seen: list[str] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        seen.append(address[0])
        assert ipaddress.ip_address(address[0]).is_loopback, f"fetcher tried to connect to {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(fetch_http.socket, "create_connection", guarded)
    return seen


def fetcher(**kw) -> HttpImageSource:
    """A fetcher for the image path alone: robots.txt is off here (its own requests would change the counts
    these tests assert) and tested with it on in test_politeness.py."""
    opts = dict(
        timeout=2.0, max_retries=1, backoff=0.02, max_backoff=0.5, allow_loopback_for_tests=True, respect_robots=False
    )
    opts.update(kw)
    return HttpImageSource(**opts)


JPEG = sup.made_jpeg(1)


def test_ok_sends_user_agent_and_returns_bytes(server, connections):
    url = server.image("/a.jpg", JPEG)
    r = fetcher().fetch(url)
    assert (r.ok, r.reason_code, r.status, r.content_type, r.attempts) == (True, "ok", 200, "image/jpeg", 1)
    assert r.body == JPEG
    headers = server.requests[-1][1]
    assert headers["User-Agent"] == DEFAULT_USER_AGENT and "metaclip-assets/" in DEFAULT_USER_AGENT
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert connections == ["127.0.0.1"]


def test_loopback_needs_the_explicit_opt_in(server, connections):
    url = server.image("/a.jpg", JPEG)
    r = HttpImageSource(timeout=1.0).fetch(url)
    assert r.reason_code == "blocked_address" and not r.ok
    assert server.hits["/a.jpg"] == 0 and connections == []


@pytest.mark.parametrize("route,reason", [("/slow-body", "timeout"), ("/slow-headers", "timeout")])
def test_total_deadline_covers_dripping_servers(server, connections, route, reason):
    server.routes["/slow-body"] = sup.slow_body(JPEG * 4, step=32, pause=0.03)  # ~5 s of drip
    server.routes["/slow-headers"] = sup.slow_headers(pause=0.03)
    t0 = time.monotonic()
    r = fetcher(timeout=0.4, max_retries=1).fetch(server.url(route))
    elapsed = time.monotonic() - t0
    assert r.reason_code == reason and r.attempts == 2  # timeouts are transient: retried once
    assert 0.8 <= elapsed < 3.5, elapsed  # two 0.4 s deadlines + backoff (+ load slack), not the 5+ s of drip


def test_byte_cap_by_content_length_and_while_reading(server, connections):
    big = b"\xff\xd8" + b"\x00" * 300_000
    server.image("/big.jpg", big)
    server.routes["/big-chunked.jpg"] = sup.chunked(big)
    f = fetcher(max_bytes=100_000)
    r1, r2 = f.fetch(server.url("/big.jpg")), f.fetch(server.url("/big-chunked.jpg"))
    assert (r1.reason_code, r1.attempts) == ("too_large", 1) and "Content-Length" in r1.detail
    assert (r2.reason_code, r2.attempts) == ("too_large", 1) and r2.body is None


def test_gzip_content_encoding_bomb_stops_at_the_cap(server, connections):
    server.image("/bomb.gz", sup.gzip_bomb(20_000_000), headers={"Content-Encoding": "gzip"})
    t0 = time.monotonic()
    r = fetcher(max_bytes=1_000_000).fetch(server.url("/bomb.gz"))
    assert r.reason_code == "too_large" and time.monotonic() - t0 < 3.0  # 20 MB never inflated


def test_gzip_content_encoding_is_decoded(server, connections):
    import gzip

    server.image("/z.jpg", gzip.compress(JPEG), headers={"Content-Encoding": "gzip"})
    assert fetcher().fetch(server.url("/z.jpg")).body == JPEG


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/x.jpg",
        "http://0.0.0.0:80/",
        "http://[fd00::1]/x",
        "http://224.0.0.1/x",
    ],
)
def test_redirect_to_forbidden_address_refused_before_connecting(server, connections, target):
    server.routes["/go"] = sup.redirect(target)
    r = fetcher().fetch(server.url("/go"))
    assert (r.reason_code, r.attempts) == ("blocked_address", 1)
    assert connections == ["127.0.0.1"]  # the first hop only


def test_redirect_to_name_resolving_private_is_refused(server, connections):
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return {"metadata.internal": ["169.254.169.254"], "mixed.example": ["93.184.216.34", "10.1.2.3"]}[host]

    f = fetcher(resolver=resolver)
    server.routes["/go1"] = sup.redirect("http://metadata.internal/computeMetadata/v1/")
    server.routes["/go2"] = sup.redirect("https://mixed.example/x.jpg")
    assert f.fetch(server.url("/go1")).reason_code == "blocked_address"
    assert f.fetch(server.url("/go2")).reason_code == "blocked_address"  # one bad answer poisons the name
    assert resolved == ["metadata.internal", "mixed.example"] and connections == ["127.0.0.1", "127.0.0.1"]


def test_connects_to_the_checked_address_not_a_second_lookup(server, connections):
    """The name is resolved once (by our resolver) and the socket opened to that address, with the
    original Host header: a later DNS answer (rebinding) never gets a say."""
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    server.image("/a.jpg", JPEG)
    server.routes["/hop"] = sup.redirect(f"http://images.test:{server.port}/a.jpg")
    r = fetcher(resolver=resolver).fetch(f"http://images.test:{server.port}/hop")
    assert r.ok and r.body == JPEG and r.final_url == f"http://images.test:{server.port}/a.jpg"
    assert calls == ["images.test", "images.test"]  # once per hop, by us
    assert [h["Host"] for _, h in server.requests] == [f"images.test:{server.port}"] * 2


def test_https_verifies_the_name_while_connecting_to_the_pinned_address(tmp_path, connections):
    cert, key = sup.self_signed_cert(tmp_path, "images.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv = sup.ImageServer(tls=server_ctx).start()
    try:
        srv.image("/a.jpg", JPEG)
        trust = ssl.create_default_context(cafile=str(cert))
        pinned = {"images.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]}
        f = fetcher(ssl_context=trust, resolver=lambda host, port: pinned[host])
        r = f.fetch(f"https://images.test:{srv.port}/a.jpg")
        assert r.ok and r.body == JPEG and srv.requests[-1][1]["Host"] == f"images.test:{srv.port}"
        bad = f.fetch(f"https://wrong.test:{srv.port}/a.jpg")  # same address, certificate names someone else
        assert (bad.reason_code, bad.attempts) == ("connection_error", 1) and "certificate" in bad.detail.lower()
        assert connections == ["127.0.0.1", "127.0.0.1"]
    finally:
        srv.stop()


def test_redirects_followed_within_limit(server, connections):
    server.image("/a.jpg", JPEG)
    server.routes["/r1"] = sup.redirect("/a.jpg", 301)
    server.routes["/loop"] = sup.redirect("/loop", 307)
    f = fetcher(max_redirects=3)
    assert f.fetch(server.url("/r1")).ok
    r = f.fetch(server.url("/loop"))
    assert r.reason_code == "too_many_redirects" and server.hits["/loop"] == 4


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n" + JPEG[:300],
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + JPEG[:300],
        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n" + JPEG[:300],
    ],
    ids=["short-body", "no-body", "chunk-cut", "last-chunk-missing"],
)
def test_body_cut_short_is_truncated_not_ok(server, connections, response):
    server.routes["/cut.jpg"] = sup.raw(response)
    r = fetcher(max_retries=1).fetch(server.url("/cut.jpg"))
    assert (r.ok, r.reason_code, r.body, r.attempts) == (False, "truncated", None, 2)  # a cut link may heal: retried
    assert server.hits["/cut.jpg"] == 2


@pytest.mark.parametrize(
    "location",
    [
        b"http://[::1",
        b"http://exa mple.com/x.jpg",
        b"http://a..b/x.jpg",
        b"http://host:99999/",
        b"http://%00/",
        b"http://\x7f/",
    ],
)
def test_malformed_redirect_location_is_a_permanent_bad_redirect(server, connections, location):
    server.routes["/go"] = sup.raw(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
    r = fetcher(max_retries=2).fetch(server.url("/go"))
    assert (r.reason_code, r.status, r.attempts) == ("bad_redirect", 302, 1) and server.hits["/go"] == 1
    assert connections == ["127.0.0.1"]


def test_404_is_not_retried_but_503_is(server, connections):
    server.routes["/flaky.jpg"] = sup.flaky(JPEG, failures=1, code=503)
    f = fetcher(max_retries=2)
    r404 = f.fetch(server.url("/missing.jpg"))
    assert (r404.reason_code, r404.status, r404.attempts, server.hits["/missing.jpg"]) == ("http_4xx", 404, 1, 1)
    r = f.fetch(server.url("/flaky.jpg"))
    assert (r.ok, r.attempts, server.hits["/flaky.jpg"]) == (True, 2, 2) and r.body == JPEG
    server.routes["/down"] = sup.status(500)
    r5 = f.fetch(server.url("/down"))
    assert (r5.reason_code, r5.status, r5.attempts) == ("http_5xx", 500, 3)


def test_429_honours_retry_after_or_gives_up(server, connections):
    server.routes["/busy"] = sup.status(429, {"Retry-After": "3600"})
    r = fetcher(max_retries=3).fetch(server.url("/busy"))
    assert (r.reason_code, r.attempts, r.status) == ("rate_limited", 1, 429)  # an hour is longer than max_wait
    server.routes["/brief.jpg"] = sup.flaky(JPEG, failures=1, code=429)
    assert fetcher(max_retries=3).fetch(server.url("/brief.jpg")).attempts == 2


def test_x_robots_tag_opt_out(server, connections):
    server.image("/noai.jpg", JPEG, headers={"X-Robots-Tag": "noimageai"})
    server.image("/other.jpg", JPEG, headers={"X-Robots-Tag": "otherbot: noai"})
    server.image("/us.jpg", JPEG, headers={"X-Robots-Tag": "metaclip-assets: noai, nofollow"})
    f = fetcher()
    assert f.fetch(server.url("/noai.jpg")).reason_code == "opt_out"
    assert f.fetch(server.url("/other.jpg")).ok
    assert f.fetch(server.url("/us.jpg")).reason_code == "opt_out"


def test_opted_out_parsing():
    assert opted_out(["noindex", "NoAI"]) and opted_out(["max-image-preview: none, noimageai"])
    assert opted_out(["unavailable_after: 25 Jun 2010 15:00:00 PST", "noai"])
    assert not opted_out(["googlebot: noai", "noindex, nofollow"]) and not opted_out([])


def test_non_image_content_type_refused(server, connections):
    server.image("/page", b"<html></html>", "text/html; charset=utf-8")
    assert fetcher().fetch(server.url("/page")).reason_code == "not_image"


@pytest.mark.parametrize(
    "url,reason",
    [
        ("ftp://127.0.0.1/a.jpg", "bad_url"),
        ("file:///etc/passwd", "bad_url"),
        ("javascript:alert(1)", "bad_url"),
        ("http://user:secret@127.0.0.1/a.jpg", "url_credentials"),
        ("http:///nohost", "bad_url"),
        ("http://127.0.0.1:99999/a.jpg", "bad_url"),
        ("http://exa mple.com/a.jpg", "bad_url"),  # a malformed name is the URL's fault, not DNS's: no retry
        ("http://a..b/a.jpg", "bad_url"),
        ("http://" + "a" * 64 + ".com/a.jpg", "bad_url"),
    ],
)
def test_bad_urls_refused_without_connecting(connections, url, reason):
    assert fetcher().fetch(url).reason_code == reason and connections == []


def test_dns_errors(connections):
    def nx(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    tries = []

    def flaky_dns(host: str, port: int) -> list[str]:
        tries.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    assert (r := fetcher(resolver=nx).fetch("http://nx.test/a.jpg")).reason_code == "dns_error" and r.attempts == 1
    assert fetcher(resolver=flaky_dns, max_retries=2).fetch("http://tmp.test/a.jpg").attempts == 3 and len(tries) == 3


def test_connection_refused_is_transient(connections):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = fetcher(max_retries=1).fetch(f"http://127.0.0.1:{port}/a.jpg")
    assert (r.reason_code, r.attempts) == ("connection_error", 2)


def test_per_host_concurrency_is_bounded(server, connections):
    server.routes["/slowish.jpg"] = sup.delayed(JPEG, pause=0.15)
    f = fetcher(max_per_host=2, max_connections=8)
    results = []
    threads = [threading.Thread(target=lambda: results.append(f.fetch(server.url("/slowish.jpg")))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 6 and all(r.ok for r in results)
    assert 1 <= server.max_inflight["/slowish.jpg"] <= 2


@pytest.mark.parametrize(
    "ip,bad",
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("239.255.255.250", True),
        ("255.255.255.255", True),
        ("240.0.0.1", True),
        ("198.18.0.1", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("fec0::1", True),
        ("ff02::1", True),
        ("ff0e::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("::127.0.0.1", True),
        ("64:ff9b::a00:1", True),
        ("2002:a00:1::", True),
        ("2001:db8::1", True),
    ],
)
def test_forbidden_address_table(ip, bad):
    assert forbidden_address(ipaddress.ip_address(ip)) is bad


def test_opt_in_admits_loopback_only():
    f = HttpImageSource(allow_loopback_for_tests=True)
    f.check_address("127.0.0.1")
    f.check_address("::1")
    for ip in ("10.0.0.1", "169.254.169.254", "192.168.0.1", "0.0.0.0"):
        with pytest.raises(fetch_http.FetchRefused):
            f.check_address(ip)
