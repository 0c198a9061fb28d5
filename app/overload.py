"""Load shedding: a request is answered ``503`` with ``Retry-After`` at once, before any work is
done, when its process already serves ``API_MAX_IN_FLIGHT`` requests or when the process's event
loop runs more than ``API_MAX_LOOP_LAG_MS`` late.

Why: a gevent worker takes every connection it is offered. Offered more than it can serve, it
serves everything more slowly, until answers come after the clients have given up and the
work done for them is wasted (``docs/performance.md`` has what that looked like). With a cap,
what is admitted is served in bounded time and the excess learns at once to come back later, as
with the 503 a Kafka outage gives (devices already retry on 503 + Retry-After).

What counts: requests between ``before_request`` and ``teardown_request``, so a request waiting
for Kafka's acknowledgement counts too; a Kafka stall therefore also sheds new work instead of
piling it up. The health checks are never shed: a busy task is not a dead one, and a load
balancer or ECS that saw failing health checks would replace a task that is only busy. Nor is
``/metrics``, which shows the overload: ``http_requests_in_flight`` and ``http_requests_shed_total``.

Two signals, because overload comes two ways. When Kafka stalls, requests pile up waiting for
acknowledgements: the in-flight count sees it. When the CPU is short, the wait happens before a
request reaches Flask: hundreds of connections queue for the CPU inside gevent while few are in
flight, so the in-flight count alone sheds nothing while the latency grows to seconds. The event
loop's lag sees that: how late a timer greenlet runs is how long any ready request waits for the
CPU. It is what event-loop servers elsewhere shed on (fastify's under-pressure, Node's toobusy).

Sizing: the steady in-flight count is the rate times the latency (1,000 req/s at 20 ms is 20), so
the default of 256 is reached only under overload or when Kafka stalls for a quarter of a second
at that rate. A healthy loop lags a few milliseconds and overload drives it to seconds; the
default of 500 ms leaves room for a start-up stall or a busy moment on a shared machine, which
should not turn clients away. 0 turns either signal off.
"""

from __future__ import annotations

import os
import threading
import time

import gevent
from flask import Flask, g, request
from flask.typing import ResponseReturnValue
from gevent import monkey

from app.errors import error_response
from app.metrics import IN_FLIGHT, SHED
from core import turns

# health checks (a busy task is not a dead one) and the metrics that show the overload
NEVER_SHED = frozenset({"health.healthz", "health.readyz", "metrics.metrics"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_AFTER_SECONDS = "1"


class InFlight:
    """A count of the requests in progress in this process, with a ceiling."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0
        self._lock = threading.Lock()  # a gevent lock under gunicorn; a real one in threaded tests

    def enter(self) -> bool:
        """Count one more request if there is room; False when at the ceiling."""
        with self._lock:
            if self.current >= self.limit:
                return False
            self.current += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.current -= 1


class LoopLag:
    """How late this process's gevent loop runs a timer, sampled by a greenlet every ``interval``.

    :meth:`seconds` also counts the time since the last sample, so a loop that has not run the
    sampler at all (the process was starved or stopped) reads as late at once, whatever order
    the loop then runs its ready greenlets in.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.lag = 0.0
        self._tick = time.monotonic()
        self._pid: int | None = None

    def seconds(self) -> float:
        self._start()
        return max(self.lag, time.monotonic() - self._tick - self.interval)

    def _start(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()  # one sampler per process (gunicorn builds the app after fork)
        self._tick = time.monotonic()
        gevent.spawn(self._sample)

    def _sample(self) -> None:
        while True:
            before = time.monotonic()
            gevent.sleep(self.interval)
            self._tick = time.monotonic()
            self.lag = max(0.0, self._tick - before - self.interval)


def _gevent_active() -> bool:
    """Whether this process runs under gevent's monkey-patching (gunicorn's gevent worker)."""
    return monkey.is_module_patched("socket")


def in_flight_limit(limit: int) -> InFlight | None:
    """The count of requests in flight with ``limit`` as its ceiling (``API_MAX_IN_FLIGHT``);
    None for 0, that signal off."""
    return InFlight(limit) if limit > 0 else None


def register_load_shedding(
    app: Flask,
    in_flight: InFlight | None,
    max_lag_ms: int = 0,
    *,
    reads_first: bool = False,
    max_write_wait_ms: int = 0,
) -> None:
    """Shed requests beyond ``in_flight``'s ceiling (None: that signal off) or while the event
    loop lags more than ``max_lag_ms`` (0: that signal off). With ``reads_first``
    (core/turns.py), an admitted write gives way to every ready read, and new writes are shed
    while the oldest queued one has waited more than ``max_write_wait_ms``. Register after the
    request-log hooks, so a shed request still gets its request id, its log line and its metrics."""
    turns.enable(reads_first)
    reads_first = turns.enabled()
    max_write_wait = max_write_wait_ms / 1000 if reads_first else 0
    loop_lag = LoopLag() if max_lag_ms > 0 and _gevent_active() else None
    if in_flight is None and loop_lag is None and not reads_first:
        return
    max_lag = max_lag_ms / 1000

    def shed(why: str) -> ResponseReturnValue:
        SHED.labels(why).inc()
        response, status = error_response(503, "overloaded", "this server is at capacity; retry after Retry-After")
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response, status

    @app.before_request
    def admit() -> ResponseReturnValue | None:
        if request.endpoint in NEVER_SHED:
            return None
        if loop_lag is not None and loop_lag.seconds() > max_lag:
            return shed("loop_lag")
        write = reads_first and request.method not in READ_METHODS
        if write and max_write_wait and turns.oldest_wait() > max_write_wait:
            return shed("write_wait")
        if in_flight is not None:
            if not in_flight.enter():
                return shed("in_flight")
            g.admitted = True
            IN_FLIGHT.inc()
        if write:
            turns.give_way()  # reads first: the rest of this write runs after the ready reads
        return None

    @app.teardown_request
    def release(exc: BaseException | None) -> None:
        if in_flight is not None and g.pop("admitted", False):
            in_flight.leave()
            IN_FLIGHT.dec()
