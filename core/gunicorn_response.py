"""gunicorn's WSGI response, writing a response's head and its first body chunk in one send.

Why: gunicorn sends the head (status line and headers) and then each body chunk, each with its
own ``sendall``. The API's answers are one small JSON chunk, so every response cost two sends,
and on loopback a send is not cheap: the kernel delivers the bytes to the receiver inside the
sender's system call. In the profile of ``POST /events`` gevent's ``sendall`` was the largest
item (the response's two and the Redis and Kafka requests; ``docs/performance.md``). One send
per response halves the response's share.

Everything else is gunicorn's own code: the head is built by its ``send_headers`` into a
buffer instead of the socket, and is sent alone wherever no body chunk follows it (no body,
``HEAD``, chunked bodies, files).

Installed by the worker (``core.gunicorn_worker``) in its own process: gunicorn builds each
response as ``gunicorn.http.wsgi.Response``.
"""

from __future__ import annotations

from typing import Any

from gunicorn import util
from gunicorn.http import wsgi


class _Collector:
    """Stands in for the socket while gunicorn writes the head."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)


class CoalescingResponse(wsgi.Response):
    """:class:`gunicorn.http.wsgi.Response` whose first ``write`` sends head and chunk together."""

    sock: Any  # gunicorn's client socket; send_headers swaps in a _Collector for a moment
    _coalescing = False
    _head: bytes | None = None

    def write(self, arg: Any) -> None:
        if self.headers_sent or self.chunked:
            return super().write(arg)
        self._coalescing = True
        try:
            super().write(arg)  # send_headers (buffered), then _emit_body (head + chunk)
        finally:
            self._coalescing = False
            self._flush_head()  # the chunk was dropped (no body allowed, or beyond Content-Length)

    def send_headers(self) -> None:
        if not self._coalescing or self.headers_sent:
            return super().send_headers()
        sock, collector = self.sock, _Collector()
        self.sock = collector
        try:
            super().send_headers()
        finally:
            self.sock = sock
        self._head = b"".join(collector.parts)

    def _emit_body(self, data: bytes) -> None:
        head, self._head = self._head, None
        if head is not None:
            util.write(self.sock, head + data)
        else:
            super()._emit_body(data)

    def _flush_head(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            util.write(self.sock, head)


def install() -> None:
    """Make gunicorn build :class:`CoalescingResponse` in this (worker) process."""
    wsgi.Response = CoalescingResponse
