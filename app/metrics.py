"""Prometheus metrics for the API, correct across gunicorn worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``scripts/run`` and the container do), each worker writes
its samples there and ``/metrics`` aggregates all of them; ``gunicorn.conf.py`` cleans up after
exited workers. ``/metrics`` needs an ``admin`` token (Prometheus: ``authorization`` in the scrape
config), so the API port does not hand its traffic profile to anyone who asks.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.auth import roles_required

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds", "HTTP request latency", ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
CACHE = Counter("resource_cache_total", "Resource cache lookups", ["result"])  # hit | miss | error
# load shedding (app/overload.py): how close each process is to API_MAX_IN_FLIGHT, and what it refused
IN_FLIGHT = Gauge("http_requests_in_flight", "Requests in progress, as load shedding counts them",
                  multiprocess_mode="livesum")  # fmt: skip
SHED = Counter(
    "http_requests_shed_total", "Requests refused with 503 by load shedding", ["reason"]
)  # in_flight | loop_lag | write_wait

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
@roles_required("admin")  # not public: it names every endpoint and how busy it is
def metrics() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
