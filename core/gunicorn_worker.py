"""The API's gunicorn worker: gevent, plus deadlines on reading a request's head and body, fair
turns between keep-alive requests, and JSON errors.

Why a deadline: gunicorn's gevent worker waits up to ``keepalive`` (75 s, above the ALB's idle
timeout) for each request's head, and each waiting connection holds one of the worker's
``worker_connections`` slots. A client that drips its headers a byte at a time (slowloris) holds
a slot for the whole 75 s, so enough of them lock every newcomer out. Here an idle keep-alive
connection still waits up to ``keepalive`` for its next request, but once a request's first
byte has arrived its head must be complete within ``HEADER_TIMEOUT`` seconds (a new
connection's first request gets the same deadline from accept). A connection over its deadline
is closed without an answer, as nginx's ``client_header_timeout`` does.

Why a deadline on the body, read here: the head deadline ends where the body begins, and
gunicorn's gevent worker reads bodies with no timeout at all, when the application asks for
them. By then the request holds an ``API_MAX_IN_FLIGHT`` slot (``app/overload.py``) and a Flask
context, so a few hundred connections sending ``Content-Length: 4000`` and then a byte every
50 s filled every slot of a process and every device got ``503``. So the worker reads a body of
known size up to ``MAX_BODY_BYTES`` (a chunked one up to one byte more) itself, before the
application sees the request: it must arrive within ``BODY_TIMEOUT`` seconds of the head's end,
plus one second per ``BODY_MIN_RATE`` bytes received (Apache's ``mod_reqtimeout`` rule:
``body=5,MinRate=1024``). A body over its deadline is answered ``408`` (JSON) and the connection
closed, counted in ``http_request_body_timeouts_total``. A larger declared body is not read:
the application refuses it (413) from its ``Content-Length`` alone; a chunked one that turns
out larger is refused ``413`` here (werkzeug would cut it at the limit and hand on the start).

Why a yield between requests (fairness): gevent's sockets try a read before they wait, and on a
fast network the next request of a keep-alive client, or Redis's reply, is often there before
our Python asks for it. One greenlet could then serve request after request without ever
letting the hub poll the other connections, which wait, however ready, until it stops: a fast
median and a tail of the longest gap between polls. One ``gevent.sleep(0)`` before each
keep-alive request's head gives every ready connection its turn. It queues the greenlet among
gevent's callbacks, which still run before the next poll, so a greenlet that finds its next
request already there would keep going while connections whose requests arrived earlier wait:
the tail at 128 connections. So when a peek shows the next request's first byte already in the
kernel, the greenlet instead waits until the loop turn's socket events have run
(``core.turns.next_request_turn``); when nothing has arrived yet (the usual case under
open-loop load) it yields with ``sleep(0)`` as before and its ``recv`` then waits for the
socket like any other's: no extra loop turn.
``KEEPALIVE_TURNS=0`` goes back to ``sleep(0)`` alone (both measured in ``docs/performance.md``).

Why JSON errors: the errors gunicorn answers itself, before the app sees a request (400 for a
malformed request line or header, 414, 431, 417, 501, and a 500 when the app crashed outside
Flask's handlers), are HTML in gunicorn; the API promises JSON ``{"error", "message"}``.

Selected in ``gunicorn.conf.py`` as ``worker_class``. It imports no application code: gunicorn
loads the class in the arbiter, before the app is built in each worker.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import gevent
from gunicorn import util
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.ggevent import GeventWorker

from core import gunicorn_response, turns

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 5.0
DEFAULT_BODY_MIN_RATE = 1024.0  # bytes per second
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # the API's own default (core/settings.py)


def header_timeout() -> float:
    """Seconds a request's head may take once it has started (``HEADER_TIMEOUT``, default 10)."""
    value = float(os.environ.get("HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT))
    if value <= 0:
        raise ValueError("HEADER_TIMEOUT must be a positive number of seconds")
    return value


def _positive(name: str, default: float) -> float:
    value = float(os.environ.get(name) or default)
    if value <= 0:
        raise ValueError(f"{name} must be a positive number")
    return value


def keepalive_turns() -> bool:
    """``KEEPALIVE_TURNS`` (``1``, the default, or ``0``): whether a keep-alive request whose
    head has already arrived waits for its turn after the loop turn's socket events
    (``core.turns.next_request_turn``) instead of only ``gevent.sleep(0)`` (docs/performance.md)."""
    value = os.environ.get("KEEPALIVE_TURNS", "1")
    if value not in ("0", "1"):
        raise ValueError("KEEPALIVE_TURNS must be 0 or 1")
    return value == "1"


def body_limits() -> tuple[float, float, int]:
    """(``BODY_TIMEOUT`` s, ``BODY_MIN_RATE`` bytes/s, ``MAX_BODY_BYTES``): defaults 5, 1024, 65536."""
    return (
        _positive("BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT),
        _positive("BODY_MIN_RATE", DEFAULT_BODY_MIN_RATE),
        int(_positive("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
    )


class _HeadDeadlineSocket:
    """A client socket whose reads, while gunicorn parses a request head, end at a deadline.

    Outside a head (the body, written responses) every call goes to the socket unchanged. At the
    deadline ``recv`` returns ``b""``: to gunicorn's parser the client hung up, so the connection
    is closed and only logged at debug level.
    """

    def __init__(self, sock: Any, keepalive: float, head_timeout: float, turns: bool = False) -> None:
        self._sock = sock
        self._turns = turns  # KEEPALIVE_TURNS
        self._keepalive = keepalive
        self._head_timeout = head_timeout
        self._served = 0
        self._deadline: float | None = None  # set while a head or a body is being read
        self._started = False  # the head's first byte has arrived
        self._per_byte = 0.0  # while reading a body: seconds of deadline each received byte earns
        self.timed_out = False  # the last deadline passed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    @contextlib.contextmanager
    def reading_head(self) -> Iterator[None]:
        """Wrap one ``next(parser)``: idle wait, then the head itself."""
        if self._served:
            if self._turns and self._next_request_arrived():
                turns.next_request_turn()  # after the loop turn's socket events (module docstring)
            else:
                gevent.sleep(0)  # one request per turn (module docstring: fairness)
        idle = self._keepalive if self._served else self._head_timeout
        self._deadline = time.monotonic() + idle
        self._started = False
        try:
            yield
        finally:
            self._deadline = None
            self._served += 1

    def _next_request_arrived(self) -> bool:
        """Whether the next request's first byte already waits in the kernel (a peek that never
        blocks). Only then would this greenlet jump the queue of connections whose requests
        arrived before its own, so only then does it wait for the loop turn; otherwise its
        ``recv`` waits for the socket like every other connection's, and the ``sleep(0)`` still
        covers a pipelined request already in gunicorn's read buffer."""
        raw = getattr(self._sock, "_sock", None)  # gevent's socket wraps the real, non-blocking one
        if raw is None:
            return True
        try:
            return bool(raw.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False
        except OSError:
            return True  # let the real recv report it

    @contextlib.contextmanager
    def reading_body(self, timeout: float, min_rate: float) -> Iterator[None]:
        """Reads end ``timeout`` seconds from now, plus one second per ``min_rate`` bytes received."""
        self._deadline = time.monotonic() + timeout
        self._started = True
        self._per_byte = 1.0 / min_rate
        self.timed_out = False
        try:
            yield
        finally:
            self._deadline = None
            self._per_byte = 0.0

    def recv(self, size: int, *flags: int) -> bytes:
        if self._deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            return b""
        data = None
        # False: a silent timeout (gevent's documented form), which its stubs leave out
        with gevent.Timeout(remaining, False):  # type: ignore[arg-type]
            data = self._sock.recv(size, *flags)
        if data is None:  # the deadline passed first
            self.timed_out = True
            return b""
        self._deadline += len(data) * self._per_byte
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
        self._keepalive_turns = keepalive_turns()
        self._body_timeout, self._body_min_rate, self._max_body = body_limits()
        self._body_timeouts: Any = None
        util.write_error = write_json_error  # this process is the worker's alone
        gunicorn_response.install()  # head and body in one send (core/gunicorn_response.py)
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        if self.cfg.is_ssl:  # gunicorn checks isinstance(client, SSLSocket): leave TLS sockets alone
            return super().handle(listener, client, addr)
        wrapped = _HeadDeadlineSocket(client, float(self.cfg.keepalive), self._head_timeout, self._keepalive_turns)
        gevent.getcurrent()._head_deadline_socket = wrapped  # type: ignore[attr-defined]
        return super().handle(listener, wrapped, addr)

    def timeout_ctx(self) -> Any:
        wrapped = getattr(gevent.getcurrent(), "_head_deadline_socket", None)
        if wrapped is None:
            return super().timeout_ctx()
        return wrapped.reading_head()

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        refused = self._read_body(req, sock) if isinstance(sock, _HeadDeadlineSocket) else None
        if refused == 408:
            self._count_body_timeout()
            with contextlib.suppress(OSError):
                write_json_error(sock, 408, "Request Timeout", "the request body did not arrive in time")
            raise StopIteration()  # gunicorn closes the connection
        if refused == 413:  # werkzeug would truncate a chunked body at its limit (a 400), not refuse it
            with contextlib.suppress(OSError):
                write_json_error(sock, 413, "Request Entity Too Large", "the body is larger than MAX_BODY_BYTES")
            raise StopIteration()
        return super().handle_request(listener_name, req, sock, addr)

    def _read_body(self, req: Any, sock: _HeadDeadlineSocket) -> int | None:
        """Read the body into its buffer before the application runs (module docstring): None,
        or the status to refuse it with (408: it missed its deadline; 413: a chunked body over
        MAX_BODY_BYTES). A client that hung up mid-body is closed without an answer."""
        body: Any = getattr(req, "body", None)
        reader = getattr(body, "reader", None)
        if isinstance(reader, LengthReader):
            if reader.length == 0 or reader.length > self._max_body:
                return None  # nothing to read, or the application refuses it unread (413)
            limit = reader.length
        elif isinstance(reader, ChunkedReader):
            limit = self._max_body + 1  # one byte more tells it is too large
        else:
            return None
        if getattr(req, "_expected_100_continue", False):  # wsgi.create would send it, after the read
            util.write(sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            req._expected_100_continue = False
        try:
            with sock.reading_body(self._body_timeout, self._body_min_rate):
                data = body.read(limit)
        except NoMoreData:
            data = None
        if sock.timed_out:
            return 408
        if data is None or (isinstance(reader, LengthReader) and len(data) < limit):
            raise StopIteration()  # the client hung up mid-body
        if len(data) > self._max_body:
            return 413
        body.buf = io.BytesIO()
        body.buf.write(data)  # the application reads it from here (Body keeps its surplus in buf)
        return None

    def _count_body_timeout(self) -> None:
        if self._body_timeouts is None:  # created in this worker process, after gevent patched
            from prometheus_client import Counter

            self._body_timeouts = Counter(
                "http_request_body_timeouts_total", "Requests closed with 408: the body missed its deadline"
            )
        self._body_timeouts.inc()
