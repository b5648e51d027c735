"""A local HTTP server on 127.0.0.1 for the download tests, and the registry entries that point at it.

:class:`Loopback` serves byte strings at paths from a thread (``http.server``), counts the requests, and can
misbehave as a real server does: answer 404, promise more bytes than it sends, or stall in mid-transfer. It is
stopped by the fixture that started it, with a bounded join.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ghn import pretrained

#: Folder of the served checkpoints on the server (the base URL's path).
PREFIX = "/ppuda/checkpoints/"


@dataclass
class Route:
    body: bytes
    declared: int | None = None  # Content-Length sent; None: len(body)
    stall: bool = False  # send half of the body, then hang until the server stops


class Loopback:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving :attr:`routes`; :attr:`requests` lists the paths
    asked for, in order."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
                owner.requests.append(self.path)
                route = owner.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                size = len(route.body) if route.declared is None else route.declared
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if route.stall:
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    owner.release.wait(timeout=30)  # bounded: the fixture sets it when the test ends
                    return
                self.wfile.write(route.body)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def base_url(self) -> str:
        """The URL of the served folder (what ``$GHN_PRETRAINED_URL`` is set to)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"

    def serve(self, file: str, body: bytes, **kw) -> None:
        """Serve ``body`` as ``file`` in the folder (``declared=``, ``stall=`` as in :class:`Route`)."""
        self.routes[PREFIX + file] = Route(body, **kw)

    def start(self) -> Loopback:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the loopback server did not stop"


@contextlib.contextmanager
def loopback_release(monkeypatch, cache: str | os.PathLike) -> Iterator[Loopback]:
    """A started :class:`Loopback` with ``$GHN_PRETRAINED_URL`` pointing at it and ``$GHN_CACHE`` at ``cache``;
    stopped on the way out."""
    server = Loopback().start()
    try:
        monkeypatch.setenv(pretrained.URL_ENV, server.base_url)
        monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
        yield server
    finally:
        server.stop()


def blob_id(data: bytes) -> str:
    """Git's blob id of ``data``, computed here independently of the code under test."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\x00" + data).hexdigest()


def register(monkeypatch, name: str, file: str, data: bytes) -> None:
    """Add a release ``name`` (file ``file``) whose expected content is ``data`` to the registry, for this test."""
    monkeypatch.setitem(pretrained.RELEASES, name, pretrained.Release(file, blob_id(data), "a test release"))


def closed_port_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (a port just bound and released): connections are refused,
    as on a machine without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{PREFIX}"
