"""Polite, bounded, SSRF-safe image fetching over HTTP(S) with the standard library only.

Why not urllib / requests: both resolve the host name again inside `connect`, so a URL that passed an
address check can be re-resolved to 127.0.0.1 (DNS rebinding), and both follow redirects without letting
us vet each hop. Here every hop is parsed, its host resolved once, every resolved address checked, and
the socket opened to exactly that checked address (`_PinnedHTTP(S)Connection`); TLS still verifies the
certificate against the host name. Redirects are followed by this module, never by a library.

Time is bounded by one deadline per attempt covering DNS, connect, TLS, headers and body across all
redirect hops. Socket timeouts alone cannot do that (a server that drips one byte per second never trips
a per-recv timeout), so a single watchdog thread shuts down sockets whose deadline has passed.

Politeness: robots.txt is fetched once per scheme+host+port per source instance (one run) through the same guard
and honoured for every hop of an image URL (`robots.py`: RFC 9309, 4xx = no rules, 5xx/unreachable = disallow);
at most `max_per_host` connections per host, requests to one host at least `min_host_interval` apart (more where
robots.txt asks with Crawl-delay / Request-rate), and `Retry-After` on 429/503 holds back the whole host.
"""

from __future__ import annotations

import datetime
import email.utils
import heapq
import http.client
import importlib.metadata
import ipaddress
import itertools
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import quote, urljoin, urlsplit

from metaclip_assets.acquisition import robots
from metaclip_assets.acquisition.source import FetchResult, decode_content_encoding, fail, is_non_image_type

UA_TOKEN = "metaclip-assets"  # our agent name in robots.txt groups and "agent: directive" X-Robots-Tag values
DEFAULT_CONTACT_URL = "https://github.com/metaclip-assets/metaclip-assets"  # operators set their own (config)
try:
    _VERSION = importlib.metadata.version("metaclip-assets")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    _VERSION = "0+unknown"


def user_agent_for(contact_url: str) -> str:
    """The User-Agent we send: the project, its version and where a site owner can reach whoever runs it."""
    return f"{UA_TOKEN}/{_VERSION} (+{contact_url}; CLIP data curation)"


DEFAULT_USER_AGENT = user_agent_for(DEFAULT_CONTACT_URL)
OPT_OUT_DIRECTIVES = frozenset({"noai", "noimageai"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
OK_STATUSES = frozenset({200, 203})
_CHUNK = 64 * 1024
_IMAGE_ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"
# A DNS name as resolvers accept it (letters, digits, '-', '_'; labels of 1-63; at most 253 in all). Anything else
# (spaces, control characters, empty labels) is a malformed URL, not a name to send to DNS and retry.
_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?")

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP address strings


# --- address policy -----------------------------------------------------------------------------

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for every address an image fetcher must never connect to.

    IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4, Teredo, IPv4-compatible) are judged by
    the embedded address: ::ffff:127.0.0.1 is loopback whatever `is_global` says about the IPv6 form.
    """
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return forbidden_address(ip.ipv4_mapped)
        if any(ip in net for net in _NAT64):
            return forbidden_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if int(ip) >> 32 == 0:  # ::/96 (IPv4-compatible, deprecated), also :: and ::1
            return True
        if ip.sixtofour is not None and forbidden_address(ip.sixtofour):
            return True
        if ip.teredo is not None and any(forbidden_address(a) for a in ip.teredo):
            return True
        if ip.is_site_local:
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class FetchRefused(Exception):
    """A fetch failure decided by policy or by the network, carrying its reason code (see source.REASONS)."""

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        transient: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.transient, self.status, self.retry_after = (
            reason,
            detail,
            transient,
            status,
            retry_after,
        )


def _split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, ascii host, port, request target) of an http(s) URL, or FetchRefused."""
    try:
        p = urlsplit(url.strip())
        port = p.port  # raises ValueError on a non-numeric / out-of-range port
        host = p.hostname
    except ValueError as e:
        raise FetchRefused("bad_url", str(e)) from None
    if p.scheme not in ("http", "https"):
        raise FetchRefused("bad_url", f"scheme {p.scheme!r} not allowed")
    if p.username is not None or p.password is not None or "@" in p.netloc:
        raise FetchRefused("url_credentials", "credentials in URL")
    if not host:
        raise FetchRefused("bad_url", "no host")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as e:
        raise FetchRefused("bad_url", f"bad host name: {e}") from None
    if not _HOST_NAME.fullmatch(host) and not _is_ip_literal(host):
        raise FetchRefused("bad_url", f"bad host name {host[:100]!r}")
    # http.client refuses non-ASCII and spaces in the request line; quoting keeps existing %XX escapes
    target = quote(p.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if p.query:
        target += "?" + quote(p.query, safe="/%:@!$&'()*+,;=-._~?")
    return p.scheme, host, port or (443 if p.scheme == "https" else 80), target


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])  # urlsplit strips IPv6 brackets; a zone id follows '%'
    except ValueError:
        return False
    return True


def _redirect_target(url: str, location: str, status: int) -> str:
    """The absolute URL a redirect points to, or a permanent `bad_redirect`: a Location that cannot be parsed
    is the server's error, and following it again on a retry cannot go differently."""
    try:
        target = urljoin(url, location.strip()).split("#", 1)[0]
        _split_url(target)
    except ValueError as e:  # urljoin: e.g. "Invalid IPv6 URL"
        raise FetchRefused("bad_redirect", f"Location {location[:200]!r}: {e}", status=status) from None
    except FetchRefused as e:
        if e.reason != "bad_url":
            raise  # url_credentials keeps its policy reason
        raise FetchRefused("bad_redirect", f"Location {location[:200]!r}: {e.detail}", status=status) from None
    return target


# --- deadlines ------------------------------------------------------------------------------------


class _Watchdog:
    """One daemon thread that shuts down the sockets of connections whose deadline has passed."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, http.client.HTTPConnection] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, conn: http.client.HTTPConnection) -> int:
        with self._cv:
            token = next(self._ids)
            heapq.heappush(self._heap, (deadline, token))
            self._live[token] = conn
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cv:
            self._live.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # disarmed: drop lazily
                if not self._heap:
                    self._cv.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
                conn = self._live.pop(token)
            sock = conn.sock
            if sock is not None:
                try:  # the base-class shutdown: SSLSocket.shutdown would also tear down the TLS object
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]
                except OSError:
                    pass


_WATCHDOG = _Watchdog()
_DNS_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fetch-dns")  # getaddrinfo has no timeout


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # unique, in resolver order


# --- connections pinned to a checked address --------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)  # Host header comes from `host`
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ip = ip

    def connect(self) -> None:
        raw = socket.create_connection((self._ip, self.port), self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # handshake after self.sock is set, so the watchdog can cut a stalled handshake too
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False)
        self.sock.do_handshake()


# --- the fetcher ----------------------------------------------------------------------------------


class _Limiter:
    """Per-host and global connection slots, and per-host request spacing.

    Host slot first, so queued threads do not hold global slots. A request starts no earlier than its host's
    `_due` time: the previous start + the host's interval, or the end of a Retry-After. A thread whose turn is
    more than `max_wait` away fails `rate_limited` instead of holding a worker (and its slots) that long.
    """

    def __init__(self, total: int, per_host: int, min_interval: float = 0.0, max_wait: float = 30.0) -> None:
        self._total = threading.BoundedSemaphore(total)
        self._per_host = per_host
        self.min_interval, self.max_wait = min_interval, max_wait
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._interval: dict[str, float] = {}  # hosts whose robots.txt asks for more than min_interval
        self._due: dict[str, float] = {}  # host -> monotonic time before which no request may start
        self._lock = threading.Lock()

    def slot(self, host: str) -> _Slot:
        with self._lock:
            sem = self._hosts.get(host)
            if sem is None:
                sem = self._hosts[host] = threading.BoundedSemaphore(self._per_host)
        return _Slot(self, host, sem)

    def slow_down(self, host: str, interval: float) -> None:
        with self._lock:
            self._interval[host] = max(self._interval.get(host, 0.0), interval)

    def defer(self, host: str, seconds: float) -> None:
        """No request to `host` for `seconds` (a server's Retry-After)."""
        with self._lock:
            self._due[host] = max(self._due.get(host, 0.0), time.monotonic() + seconds)

    def _turn(self, host: str) -> None:
        """Take a global slot at the host's next allowed start; the host slot is already held."""
        start = time.monotonic()
        while True:
            with self._lock:
                due = self._due.get(host, 0.0)
            now = time.monotonic()
            if due > now:
                if due - start > self.max_wait:
                    raise FetchRefused(
                        "rate_limited",
                        f"{host}: next request allowed in {due - now:.1f}s, longer than max_wait {self.max_wait}s",
                        transient=True,
                        retry_after=due - now,  # more than max_wait: not retried within this fetch
                    )
                time.sleep(due - now)
                continue
            self._total.acquire()
            with self._lock:
                now = time.monotonic()
                if self._due.get(host, 0.0) <= now:  # still our turn after waiting for the global slot
                    interval = max(self.min_interval, self._interval.get(host, 0.0))
                    if interval > 0:
                        self._due[host] = now + interval
                    return
            self._total.release()


class _Slot:
    def __init__(self, limiter: _Limiter, host: str, host_sem: threading.BoundedSemaphore) -> None:
        self._limiter, self._name, self._host = limiter, host, host_sem

    def __enter__(self) -> None:
        self._host.acquire()
        try:
            self._limiter._turn(self._name)
        except BaseException:
            self._host.release()
            raise

    def __exit__(self, *exc: object) -> None:
        self._limiter._total.release()
        self._host.release()


# X-Robots-Tag directives that themselves contain a colon: "unavailable_after: <date>" is not an agent name
_COLON_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def opted_out(values: Iterable[str], ua_token: str = UA_TOKEN, directives: frozenset[str] = OPT_OUT_DIRECTIVES) -> bool:
    """X-Robots-Tag check over all header lines: "noai" applies to everyone, "<agent>: noai" only to that agent."""
    for value in values:
        head, sep, rest = value.partition(":")
        head = head.strip().lower()
        if sep and head and not any(c in head for c in ", ") and head not in _COLON_DIRECTIVES:
            if head != ua_token.lower():
                continue  # directives for some other crawler
            words = rest
        else:
            words = value
        if any(w.strip().lower() in directives for w in words.split(",")):
            return True
    return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent
    or unparsable. A date in the past means 0."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; a zone-less one is read as such
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpImageSource:
    """`ImageSource` over the network. Thread-safe: call `fetch` from a thread pool.

    `allow_loopback_for_tests` admits 127.0.0.0/8 and ::1 (and only those) so that tests can talk to a
    local server; private, link-local and every other forbidden range stay refused even then.
    `resolver` replaces DNS (tests use it to map a name to a forbidden address without touching DNS).
    `user_agent` replaces the one built from `contact_url`; `max_wait` bounds how long a request waits for its
    host's turn (Crawl-delay, Retry-After) before failing `rate_limited`.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_bytes: int = 16 * 1024 * 1024,
        max_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_redirects: int = 5,
        max_connections: int = 64,
        max_per_host: int = 4,
        min_host_interval: float = 0.0,
        max_wait: float = 30.0,
        respect_robots: bool = True,
        max_robots_hosts: int = 10_000,
        contact_url: str = DEFAULT_CONTACT_URL,
        user_agent: str | None = None,
        ua_token: str = UA_TOKEN,
        opt_out_directives: Iterable[str] = OPT_OUT_DIRECTIVES,
        allow_loopback_for_tests: bool = False,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout, self.max_bytes, self.max_retries = timeout, max_bytes, max_retries
        self.backoff, self.max_backoff, self.max_redirects = backoff, max_backoff, max_redirects
        self.user_agent, self.ua_token = user_agent or user_agent_for(contact_url), ua_token
        self.respect_robots, self.max_wait = respect_robots, max_wait
        self.robots = robots.RobotsCache(max_robots_hosts)
        self.opt_out_directives = frozenset(d.lower() for d in opt_out_directives)
        self.allow_loopback_for_tests = allow_loopback_for_tests
        self._resolver = resolver or system_resolver
        self._ssl = ssl_context or ssl.create_default_context()
        self._limiter = _Limiter(max_connections, max_per_host, min_host_interval, max_wait)

    # public ------------------------------------------------------------------------------------
    def fetch(self, url: str) -> FetchResult:
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                status, ctype, body, final_url = self._attempt(url)
                return FetchResult(url, True, status, ctype, body, "ok", time.monotonic() - start, final_url, attempt)
            except FetchRefused as e:
                wait = self._backoff_for(attempt, e)
                if e.retry_after is not None and wait is None and e.reason != "rate_limited":
                    e = FetchRefused(
                        "rate_limited",
                        f"{e.detail}: Retry-After {e.retry_after:.0f}s is longer than max_wait {self.max_wait}s",
                        transient=True,
                        status=e.status,
                    )
                if not e.transient or attempt > self.max_retries or wait is None:
                    return fail(
                        url, e.reason, time.monotonic() - start, status=e.status, attempts=attempt, detail=e.detail
                    )
                time.sleep(wait)

    def check_address(self, ip: str) -> None:
        """FetchRefused unless `ip` is a public unicast address (or loopback with the test opt-in)."""
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            raise FetchRefused("blocked_address", f"unparsable address {ip!r}") from None
        if self.allow_loopback_for_tests and (
            addr.is_loopback or (addr.version == 6 and addr.ipv4_mapped is not None and addr.ipv4_mapped.is_loopback)
        ):
            return
        if forbidden_address(addr):
            raise FetchRefused("blocked_address", f"refused address {addr}")

    # internals ---------------------------------------------------------------------------------
    def _backoff_for(self, attempt: int, e: FetchRefused) -> float | None:
        wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if e.retry_after is not None:
            if e.retry_after > self.max_wait:
                return None  # the server asks for longer than we are willing to hold a worker
            wait = max(wait, e.retry_after)
        return wait

    def _resolve(self, host: str, port: int, deadline: float) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # literal address: no DNS
        except ValueError:
            pass
        fut = _DNS_POOL.submit(self._resolver, host, port)
        try:
            ips = fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise FetchRefused("timeout", f"DNS lookup of {host} exceeded the deadline", transient=True) from None
        except socket.gaierror as e:
            permanent = e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
            raise FetchRefused("dns_error", f"{host}: {e}", transient=not permanent) from None
        except OSError as e:
            raise FetchRefused("dns_error", f"{host}: {e}", transient=True) from None
        except UnicodeError as e:  # getaddrinfo's IDNA step; _split_url's name check should have caught it
            raise FetchRefused("bad_url", f"{host}: {e}") from None
        if not ips:
            raise FetchRefused("dns_error", f"{host}: no addresses")
        return ips

    def _attempt(self, url: str, *, robots_txt: bool = False) -> tuple[int, str | None, bytes, str]:
        deadline: float | None = None  # starts once the first connection slot is held: queueing is not fetching
        for _hop in range(self.max_redirects + 1):
            scheme, host, port, target = _split_url(url)
            if self.respect_robots and not robots_txt:
                self._check_robots(url, scheme, host, port)  # every hop: a redirect may land on another host
            with self._limiter.slot(host):
                if deadline is None:
                    deadline = time.monotonic() + self.timeout
                ips = self._checked_ips(host, port, deadline)
                location = self._request(url, scheme, host, port, target, ips, deadline, robots_txt=robots_txt)
            if isinstance(location, tuple):
                return location
            url = location
        raise FetchRefused("too_many_redirects", f"more than {self.max_redirects} redirects")

    def _checked_ips(self, host: str, port: int, deadline: float) -> list[str]:
        ips = self._resolve(host, port, deadline)
        for ip in ips:  # refuse the host if ANY of its addresses is forbidden: mixed records are a tell
            self.check_address(ip)
        return ips

    def _check_robots(self, url: str, scheme: str, host: str, port: int) -> None:
        verdict = self.robots.get((scheme, host, port), lambda: self._load_robots(scheme, host, port))
        if verdict.denied is not None:
            # not retried here: the verdict holds for the run (source.TRANSIENT marks it for a later run)
            raise FetchRefused(verdict.denied, verdict.detail)
        if not verdict.allows(url, self.ua_token):
            raise FetchRefused(
                "robots_disallowed", f"robots.txt of {host}:{port} disallows this path for {self.ua_token}"
            )

    def _load_robots(self, scheme: str, host: str, port: int) -> robots.Robots:
        """This host's robots.txt verdict, with retries of transient failures. A host the image request itself
        would refuse or fail to resolve raises that failure (uncached), so the image fails with its true reason."""
        self._checked_ips(host, port, time.monotonic() + self.timeout)
        name = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{name}:{port}/robots.txt"
        attempt = 0
        while True:
            attempt += 1
            try:
                verdict = robots.parse(self._attempt(url, robots_txt=True)[2], self.ua_token)
                break
            except FetchRefused as e:
                wait = self._backoff_for(attempt, e)
                if not e.transient or attempt > self.max_retries or wait is None:
                    verdict = robots.after_failure(e.reason, e.detail)
                    break
                time.sleep(wait)
        if verdict.delay > 0:
            self._limiter.slow_down(host, verdict.delay)
        return verdict

    def _connect(
        self, scheme: str, host: str, port: int, ips: list[str], deadline: float
    ) -> tuple[http.client.HTTPConnection, int]:
        """A connection to the first address that accepts, and its watchdog token."""
        last: Exception | None = None
        for ip in ips:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn: http.client.HTTPConnection
            if scheme == "https":
                conn = _PinnedHTTPSConnection(host, port, ip, remaining, self._ssl)
            else:
                conn = _PinnedHTTPConnection(host, port, ip, remaining)
            token = _WATCHDOG.arm(deadline, conn)
            try:
                conn.connect()
                return conn, token
            except Exception as e:  # try the next address
                _WATCHDOG.disarm(token)
                conn.close()
                last = e
        if last is None or time.monotonic() >= deadline:
            raise FetchRefused("timeout", f"connect to {host} exceeded the deadline", transient=True)
        raise last

    def _request(
        self,
        url: str,
        scheme: str,
        host: str,
        port: int,
        target: str,
        ips: list[str],
        deadline: float,
        *,
        robots_txt: bool = False,
    ) -> tuple[int, str | None, bytes, str] | str:
        """One hop: the response as (status, content type, body, url), or the next URL of a redirect.
        `robots_txt`: any 2xx, any content type, and the body cut (not refused) at robots.MAX_ROBOTS_BYTES."""
        conn, token = None, None
        try:
            conn, token = self._connect(scheme, host, port, ips, deadline)
            conn.putrequest("GET", target, skip_accept_encoding=True)
            conn.putheader("User-Agent", self.user_agent)
            conn.putheader("Accept", "text/plain,*/*;q=0.5" if robots_txt else _IMAGE_ACCEPT)
            conn.putheader("Accept-Encoding", "identity")
            conn.putheader("Connection", "close")
            conn.endheaders()
            resp = conn.getresponse()
            status, ctype = resp.status, resp.getheader("Content-Type")
            if status in REDIRECT_STATUSES and resp.getheader("Location"):
                return _redirect_target(url, resp.getheader("Location", ""), status)
            if robots_txt and 200 <= status < 300:
                body = self._read_body(conn, resp, deadline, status, limit=robots.MAX_ROBOTS_BYTES)
                try:
                    text = decode_content_encoding(body, resp.getheader("Content-Encoding"), robots.MAX_ROBOTS_BYTES)
                except OverflowError:
                    text = None
                if text is None:
                    raise FetchRefused("bad_encoding", "robots.txt Content-Encoding", status=status)
                return status, ctype, text, url
            if status not in OK_STATUSES:
                error = self._status_error(status, resp)
                if error.retry_after is not None:
                    self._limiter.defer(host, error.retry_after)  # the whole host waits, not only this URL
                raise error
            if opted_out(resp.headers.get_all("X-Robots-Tag") or (), self.ua_token, self.opt_out_directives):
                raise FetchRefused(
                    "opt_out", "X-Robots-Tag: " + "; ".join(resp.headers.get_all("X-Robots-Tag") or ()), status=status
                )
            if is_non_image_type(ctype):
                raise FetchRefused("not_image", f"Content-Type {ctype}", status=status)
            declared = resp.getheader("Content-Length")
            if declared and declared.strip().isdigit() and int(declared) > self.max_bytes:
                raise FetchRefused("too_large", f"Content-Length {declared} > {self.max_bytes}", status=status)
            body = self._read_body(conn, resp, deadline, status)
            try:
                decoded = decode_content_encoding(body, resp.getheader("Content-Encoding"), self.max_bytes)
            except OverflowError as e:
                raise FetchRefused("too_large", str(e), status=status) from None
            if decoded is None:
                encoding = resp.getheader("Content-Encoding")
                raise FetchRefused("bad_encoding", f"Content-Encoding {encoding}", status=status)
            return status, ctype, decoded, url
        except FetchRefused:
            raise
        except Exception as e:
            raise self._classify(e, deadline) from None
        finally:
            if token is not None:
                _WATCHDOG.disarm(token)
            if conn is not None:
                conn.close()

    def _read_body(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        deadline: float,
        status: int,
        *,
        limit: int | None = None,
    ) -> bytes:
        """The body, refused past `max_bytes`; with `limit`, its first `limit` bytes (the rest is never read)."""
        parts: list[bytes] = []
        size = 0
        cap = self.max_bytes if limit is None else limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchRefused(
                    "timeout", f"body not complete within {self.timeout}s", transient=True, status=status
                )
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            chunk = resp.read(min(_CHUNK, cap + 1 - size))
            if not chunk:
                if resp.length:  # http.client counts down Content-Length and returns b"" at EOF without raising
                    raise FetchRefused(
                        "truncated",
                        f"connection closed after {size} bytes, {resp.length} short of Content-Length",
                        transient=True,
                        status=status,
                    )
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                return b"".join(parts)[:limit]
            if size > cap:
                raise FetchRefused("too_large", f"body passed {self.max_bytes} bytes", status=status)

    @staticmethod
    def _status_error(status: int, resp: http.client.HTTPResponse) -> FetchRefused:
        retry_after = parse_retry_after(resp.getheader("Retry-After"))
        if status == 429:
            return FetchRefused(
                "http_429", "429 Too Many Requests", transient=True, status=status, retry_after=retry_after
            )
        if 500 <= status < 600:
            return FetchRefused("http_5xx", f"HTTP {status}", transient=True, status=status, retry_after=retry_after)
        if 400 <= status < 500:
            return FetchRefused("http_4xx", f"HTTP {status}", status=status)
        return FetchRefused("http_other", f"HTTP {status}", status=status)

    @staticmethod
    def _classify(e: Exception, deadline: float) -> FetchRefused:
        if time.monotonic() >= deadline or isinstance(e, TimeoutError):
            # past the deadline, whatever broke was most likely the watchdog cutting the socket
            return FetchRefused("timeout", f"deadline exceeded ({type(e).__name__})", transient=True)
        if isinstance(e, ssl.SSLCertVerificationError):
            return FetchRefused("connection_error", f"TLS certificate: {e}")
        if isinstance(e, socket.gaierror):
            return FetchRefused("dns_error", str(e), transient=True)
        if isinstance(e, http.client.IncompleteRead):  # a chunked body cut before its last chunk
            return FetchRefused("truncated", f"{type(e).__name__}: {e}", transient=True)
        if isinstance(e, (OSError, http.client.RemoteDisconnected)):
            return FetchRefused("connection_error", f"{type(e).__name__}: {e}", transient=True)
        if isinstance(e, http.client.HTTPException):  # malformed status line / headers: retrying will not help
            return FetchRefused("connection_error", f"{type(e).__name__}: {e}")
        return FetchRefused("connection_error", f"{type(e).__name__}: {e}")
