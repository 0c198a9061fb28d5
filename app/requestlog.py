"""Request ids and one JSON log line per request (id, method, path, status, duration; no bodies,
no headers, so neither payloads nor tokens reach the logs)."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

from app.metrics import LATENCY, REQUESTS

log = logging.getLogger("app.requests")


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
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        LATENCY.labels(request.method, endpoint).observe(duration)
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration * 1000, 2),
            },
        )
        return response
