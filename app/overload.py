"""Load shedding: each API process serves at most ``API_MAX_IN_FLIGHT`` requests at once; a
request beyond that is answered ``503`` with ``Retry-After`` at once, before any work is done.

Why: a gevent worker takes every connection it is offered. Offered more than it can serve, it
serves everything more slowly, until answers come after the clients have given up and the
work done for them is wasted. Measured on the 2-core machine: 1,000 POST/s offered to an API
that serves about 750/s answered 11 % within vegeta's 10 s (p99 18 s). With a cap, what is
admitted is served in bounded time and the excess learns at once to come back later, as with
the 503 a Kafka outage gives (devices already retry on 503 + Retry-After).

What counts: requests between ``before_request`` and ``teardown_request``, so a request waiting
for Kafka's acknowledgement counts too; a Kafka stall therefore also sheds new work instead of
piling it up. The health checks are never shed: a busy task is not a dead one, and a load
balancer or ECS that saw failing health checks would replace a task that is only busy. Nor is
``/metrics``, which shows the overload: ``http_requests_in_flight`` and ``http_requests_shed_total``.

Sizing: the steady in-flight count is the rate times the latency (1,000 req/s at 20 ms is 20), so
the default of 256 is reached only under overload or when Kafka stalls for a quarter of a second
at that rate. 0 turns shedding off.
"""

from __future__ import annotations

import threading

from flask import Flask, g, request
from flask.typing import ResponseReturnValue

from app.errors import error_response
from app.metrics import IN_FLIGHT, SHED

# health checks (a busy task is not a dead one) and the metrics that show the overload
NEVER_SHED = frozenset({"health.healthz", "health.readyz", "metrics.metrics"})
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


def register_load_shedding(app: Flask, limit: int) -> None:
    """Shed requests beyond ``limit`` in flight (0: never). Register after the request-log hooks,
    so a shed request still gets its request id, its log line and its metrics."""
    if limit <= 0:
        return
    in_flight = InFlight(limit)
    app.extensions["in_flight"] = in_flight

    @app.before_request
    def admit() -> ResponseReturnValue | None:
        if request.endpoint in NEVER_SHED:
            return None
        if not in_flight.enter():
            SHED.inc()
            response, status = error_response(
                503, "overloaded", "this server is at capacity; retry after the time in Retry-After"
            )
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
            return response, status
        g.admitted = True
        IN_FLIGHT.inc()
        return None

    @app.teardown_request
    def release(exc: BaseException | None) -> None:
        if g.pop("admitted", False):
            in_flight.leave()
            IN_FLIGHT.dec()
