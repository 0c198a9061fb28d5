"""Request ids and one JSON log line per request (id, method, path, status, duration; no bodies,
no headers, so neither payloads nor tokens reach the logs)."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

from app.metrics import LATENCY, REQUESTS

log = logging.getLogger("app.requests")

# Metric labels take values from a fixed set: a raw method or path would let any client mint
# new time series, and /metrics would grow with every one (docs/performance.md has by how much).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
UNMATCHED_ENDPOINT = "unmatched"
HSTS = "max-age=31536000; includeSubDomains"


def method_label(method: str) -> str:
    """The method as a metric label: one of KNOWN_METHODS, or OTHER."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def register_request_hooks(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        g.request_id = str(uuid.uuid4())
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        request_id = g.get("request_id", "")
        response.headers["X-Request-ID"] = request_id
        if request.is_secure:  # HTTPS (directly, or X-Forwarded-Proto with PROXY_HOPS): stay on it
            response.headers["Strict-Transport-Security"] = HSTS
        endpoint = request.url_rule.rule if request.url_rule else UNMATCHED_ENDPOINT  # the route, not the path
        method = method_label(request.method)
        REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
        LATENCY.labels(method, endpoint).observe(duration)
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method[:16],
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 2),
            },
        )
        return response
