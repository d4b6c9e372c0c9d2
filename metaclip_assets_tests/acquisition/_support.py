"""Test support for the acquisition tests: a real HTTP server on 127.0.0.1 with misbehaving routes, real
images (from ../shared/realdata when present, else made with Pillow) and curated rows built like the pool's.

Not a test module (no test_ prefix): imported by test_acquisition_*.py, which re-export its fixtures.
"""

from __future__ import annotations

import collections
import gzip
import io
import shutil
import ssl
import struct
import subprocess
import tarfile
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from metaclip_assets.crawl.pool import image_uuid, pair_ids

Route = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server.owner
        path = self.path.split("?", 1)[0]
        with srv.lock:
            srv.hits[path] += 1
            srv.requests.append((path, dict(self.headers.items())))
            srv.inflight[path] += 1
            srv.max_inflight[path] = max(srv.max_inflight[path], srv.inflight[path])
        try:
            route = srv.routes.get(path)
            if route is None:
                send(self, b"not found", "text/plain", status=404)
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client gave up (deadline, byte cap): exactly what several routes provoke
        finally:
            with srv.lock:
                srv.inflight[path] -= 1

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ImageServer


def send(
    h: BaseHTTPRequestHandler,
    body: bytes,
    ctype: str = "image/jpeg",
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


class ImageServer:
    """ThreadingHTTPServer on an ephemeral 127.0.0.1 port; `routes` maps a path to a handler function."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.inflight: collections.Counter[str] = collections.Counter()
        self.max_inflight: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        if tls is not None:  # handshake happens in accept(); a client that rejects us only fails that accept
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> ImageServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def image(self, path: str, body: bytes, ctype: str = "image/jpeg", headers: dict[str, str] | None = None) -> str:
        self.routes[path] = lambda h: send(h, body, ctype, headers=headers)
        return self.url(path)


# --- misbehaving routes ---------------------------------------------------------------------------


def slow_body(body: bytes, step: int = 64, pause: float = 0.05) -> Route:
    """Headers at once, then the body dripped: never trips a per-recv timeout, only a total deadline."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for i in range(0, len(body), step):
            h.wfile.write(body[i : i + step])
            h.wfile.flush()
            time.sleep(pause)

    return route


def delayed(body: bytes, pause: float) -> Route:
    """The image after `pause` seconds of silence (a busy server, not a broken one)."""

    def route(h: BaseHTTPRequestHandler) -> None:
        time.sleep(pause)
        send(h, body)

    return route


def slow_headers(pause: float = 0.05, seconds: float = 5.0) -> Route:
    """Status line, then one header byte per `pause`: a slowloris the socket timeout alone cannot stop."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        h.wfile.flush()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            h.wfile.write(b"a")
            h.wfile.flush()
            time.sleep(pause)

    return route


def chunked(body: bytes, ctype: str = "image/jpeg") -> Route:
    """Body with no Content-Length (chunked): the byte cap must trip while reading."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(body), 65536):
            part = body[i : i + 65536]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        h.wfile.write(b"0\r\n\r\n")

    return route


def raw(response: bytes) -> Route:
    """Exactly these bytes on the socket, then close: for responses http.server would not write (a body cut
    short of its Content-Length, a chunked body without its last chunk, a malformed Location)."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(response)
        h.wfile.flush()
        h.close_connection = True

    return route


def redirect(location: str, status: int = 302) -> Route:
    return lambda h: send(h, b"", "text/plain", status=status, headers={"Location": location})


def status(code: int, headers: dict[str, str] | None = None) -> Route:
    return lambda h: send(h, f"status {code}".encode(), "text/plain", status=code, headers=headers)


def flaky(body: bytes, failures: int = 1, code: int = 503) -> Route:
    """`failures` times `code`, then the image."""
    state = {"n": 0}

    def route(h: BaseHTTPRequestHandler) -> None:
        state["n"] += 1
        if state["n"] <= failures:
            send(h, b"try later", "text/plain", status=code)
        else:
            send(h, body)

    return route


def switchable(body: bytes, server_error: dict[str, bool]) -> Route:
    """503 while server_error["on"], else the image: an outage the test ends."""
    return lambda h: send(h, b"down", "text/plain", status=503) if server_error["on"] else send(h, body)


# --- image bytes ----------------------------------------------------------------------------------


def self_signed_cert(directory: Path, host: str) -> tuple[Path, Path]:
    """(cert, key) for `host` made with the openssl CLI; skips the test where openssl is missing."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = directory / f"{host}.crt", directory / f"{host}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature + IHDR declaring width x height RGB, and a tiny IDAT: a few hundred bytes
    that would need 30 GB to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gzip_bomb(decoded_size: int) -> bytes:
    return gzip.compress(b"\x00" * decoded_size, compresslevel=9)


def made_jpeg(seed: int, size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, 1, 3))
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    arr = (base + np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1)) % 256
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def load_images(shared_realdata: Path | None, n: int) -> list[bytes]:
    """n distinct real JPEGs: a few COCO photos (640 px, exercise JPEG draft) then CIFAR-10 test images
    (32 px); images made with Pillow when ../shared/realdata is absent."""
    if shared_realdata is None:
        return [made_jpeg(i, (96 + 8 * (i % 5), 64 + 4 * (i % 3))) for i in range(n)]
    out: list[bytes] = []
    coco = sorted((shared_realdata / "coco-mini-val2017" / "val2017").glob("*.jpg"))[:3]
    out.extend(p.read_bytes() for p in coco)
    with tarfile.open(shared_realdata / "cifar10-test-jpg" / "cifar10-test-jpg.tar.gz") as tar:
        for m in tar:
            if len(out) >= n:
                break
            if m.isfile() and m.name.endswith(".jpg"):
                out.append(tar.extractfile(m).read())  # type: ignore[union-attr]
    return out[:n]


def optional_realdata(request: pytest.FixtureRequest) -> Path | None:
    """The conftest `realdata` fixture, or None where it would skip: these tests run either way."""
    try:
        return request.getfixturevalue("realdata")
    except pytest.skip.Exception:
        return None


# --- curated rows -------------------------------------------------------------------------------------


def curated_rows(pairs: list[tuple[str, str]], snapshot: str = "TEST-2024-01") -> pl.DataFrame:
    """Rows in the curated-pair schema for (url, text) pairs, ids computed as the pool computes them."""
    urls = [u for u, _ in pairs]
    texts = [t for _, t in pairs]
    n = len(pairs)
    return pl.DataFrame(
        {
            "pair_id": pl.Series(pair_ids(urls, texts), dtype=pl.UInt64),
            "image_uuid": [image_uuid(u) for u in urls],
            "url": urls,
            "text": texts,
            "text_key": ["alt"] * n,
            "snapshot": [snapshot] * n,
            "source_file": ["crawl-00000.warc.gz"] * n,
            "record_offset": pl.Series(range(0, n * 1000, 1000), dtype=pl.Int64),
            "page_url": [f"https://example.org/page/{i // 3}" for i in range(n)],
            "fetch_time": ["2024-01-01T00:00:00Z"] * n,
            "source_format": ["warc"] * n,
            "entry_ids": pl.Series([[i % 7, 100 + i % 3] for i in range(n)], dtype=pl.List(pl.UInt32)),
        }
    )
