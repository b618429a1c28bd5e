"""A tiny HTTP server on 127.0.0.1 that stands in for the Hugging Face Hub and for plain download URLs.

It speaks just enough of the hub's ``resolve`` protocol for the real ``huggingface_hub`` client
(``HEAD`` with ``X-Repo-Commit``/``ETag``/``Content-Length``, ``GET`` with ``Range``), can cut a
response short to exercise resuming, and logs every request so tests can assert what the client did.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    url: str = ""
    #: "/org/repo/resolve/main/path" or "/plain/name" -> bytes
    files: dict[str, bytes] = field(default_factory=dict)
    #: path -> number of bytes after which the NEXT full GET of it is cut (one-shot)
    cut_after: dict[str, int] = field(default_factory=dict)
    #: (method, path, Range header or None)
    log: list[tuple[str, str, str | None]] = field(default_factory=list)
    no_range: bool = False

    def add_hub_file(self, repo: str, filename: str, data: bytes, revision: str = "main") -> None:
        self.files[f"/{repo}/resolve/{revision}/{filename}"] = data

    def add_plain_file(self, name: str, data: bytes) -> str:
        self.files[f"/plain/{name}"] = data
        return f"{self.url}/plain/{name}"


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _headers(self, data: bytes, status: int, start: int, end: int) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            if self.path.split("/")[3:4] == ["resolve"]:
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()

        def _lookup(self) -> bytes | None:
            data = hub.files.get(self.path)
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Error-Message", "Entry not found")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()
            return data

        def do_HEAD(self) -> None:  # noqa: N802
            hub.log.append(("HEAD", self.path, self.headers.get("Range")))
            data = self._lookup()
            if data is not None:
                self._headers(data, 200, 0, len(data))

        def do_GET(self) -> None:  # noqa: N802
            rng = self.headers.get("Range")
            hub.log.append(("GET", self.path, rng))
            data = self._lookup()
            if data is None:
                return
            start, end, status = 0, len(data), 200
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and not hub.no_range:
                start, status = int(m.group(1)), 206
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self._headers(data, status, start, end)
            cut = hub.cut_after.pop(self.path, None)
            body = data[start:end]
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve() -> Iterator[FakeHub]:
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
