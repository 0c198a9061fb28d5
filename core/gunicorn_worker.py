"""The API's gunicorn worker: gevent, plus a deadline on reading a request's head, fair turns
between keep-alive requests, and JSON errors.

Why a deadline: gunicorn's gevent worker waits up to ``keepalive`` (75 s, above the ALB's idle
timeout) for each request's head, and each waiting connection holds one of the worker's
``worker_connections`` slots. A client that drips its headers a byte at a time (slowloris) holds
a slot for the whole 75 s, so enough of them lock every newcomer out. Here an idle keep-alive
connection still waits up to ``keepalive`` for its next request, but once a request's first
byte has arrived its head must be complete within ``HEADER_TIMEOUT`` seconds (a new
connection's first request gets the same deadline from accept). A connection over its deadline
is closed without an answer, as nginx's ``client_header_timeout`` does.

Why a yield between requests (fairness): gevent's sockets try a read before they wait, and on a
fast network the next request of a keep-alive client, or Redis's reply, is often there before
our Python asks for it. One greenlet could then serve request after request without ever
letting the hub poll the other connections: under wrk at 128 connections each worker process
polled its sockets about ten times a second (gaps up to 1.6 s), p50 1.8 ms but p90 892 ms. One
``gevent.sleep(0)`` before each keep-alive request's head gives every ready connection its turn:
1,282 -> 1,595 req/s, p90 892 -> 142 ms, the longest gap 1.6 -> 0.2 s (one run each, same load).

Why JSON errors: the errors gunicorn answers itself, before the app sees a request (400 for a
malformed request line or header, 414, 431, 417, 501, and a 500 when the app crashed outside
Flask's handlers), are HTML in gunicorn; the API promises JSON ``{"error", "message"}``.

Selected in ``gunicorn.conf.py`` as ``worker_class``. It imports no application code: gunicorn
loads the class in the arbiter, before the app is built in each worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import gevent
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from core import gunicorn_response

DEFAULT_HEADER_TIMEOUT = 10.0


def header_timeout() -> float:
    """Seconds a request's head may take once it has started (``HEADER_TIMEOUT``, default 10)."""
    value = float(os.environ.get("HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT))
    if value <= 0:
        raise ValueError("HEADER_TIMEOUT must be a positive number of seconds")
    return value


class _HeadDeadlineSocket:
    """A client socket whose reads, while gunicorn parses a request head, end at a deadline.

    Outside a head (the body, written responses) every call goes to the socket unchanged. At the
    deadline ``recv`` returns ``b""``: to gunicorn's parser the client hung up, so the connection
    is closed and only logged at debug level.
    """

    def __init__(self, sock: Any, keepalive: float, head_timeout: float) -> None:
        self._sock = sock
        self._keepalive = keepalive
        self._head_timeout = head_timeout
        self._served = 0
        self._deadline: float | None = None  # set while a head is being read
        self._started = False  # the head's first byte has arrived

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    @contextlib.contextmanager
    def reading_head(self) -> Iterator[None]:
        """Wrap one ``next(parser)``: idle wait, then the head itself."""
        if self._served:
            gevent.sleep(0)  # one request per turn (module docstring: fairness)
        idle = self._keepalive if self._served else self._head_timeout
        self._deadline = time.monotonic() + idle
        self._started = False
        try:
            yield
        finally:
            self._deadline = None
            self._served += 1

    def recv(self, size: int, *flags: int) -> bytes:
        if self._deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return b""
        data = None
        with gevent.Timeout(remaining, False):
            data = self._sock.recv(size, *flags)
        if data is None:  # the deadline passed first
            return b""
        if data and not self._started:
            self._started = True
            self._deadline = min(self._deadline, time.monotonic() + self._head_timeout)
        return data


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` with a JSON body shaped like the app's errors."""
    error = reason.lower().replace(" ", "_") if status_int < 500 else "internal_error"
    message = mesg or reason
    if status_int >= 500:
        message = "an unexpected error occurred"  # no internals to the client
    body = json.dumps({"error": error, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class HeaderDeadlineGeventWorker(GeventWorker):
    """gunicorn's gevent worker with a request-head deadline and JSON errors (module docstring)."""

    def init_process(self) -> None:
        self._head_timeout = header_timeout()
        util.write_error = write_json_error  # this process is the worker's alone
        gunicorn_response.install()  # head and body in one send (core/gunicorn_response.py)
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if self.cfg.is_ssl:  # gunicorn checks isinstance(client, SSLSocket): leave TLS sockets alone
            return super().handle(listener, client, addr)
        wrapped = _HeadDeadlineSocket(client, float(self.cfg.keepalive), self._head_timeout)
        gevent.getcurrent()._head_deadline_socket = wrapped  # type: ignore[attr-defined]
        return super().handle(listener, wrapped, addr)

    def timeout_ctx(self) -> Any:
        wrapped = getattr(gevent.getcurrent(), "_head_deadline_socket", None)
        if wrapped is None:
            return super().timeout_ctx()
        return wrapped.reading_head()
