"""The benchmark's HTTP section (``--only http``): bare Flask, bare Flask + PyJWT, the API's cache-hit
GET and its POST with no worker running, each under the project's gunicorn settings.

wrk with 1 thread at 8, 32 and 128 connections (best of the three), vegeta at a constant half of
that best rate for p50/p99; the CPU figure is the gunicorn workers' user+system time per request.
"""

from __future__ import annotations

import subprocess
import uuid

from bench.common import (
    DETAILS,
    ROWS,
    Row,
    cpu_seconds_of_children,
    forget_resource,
    gunicorn,
    say,
    store_resource,
    token,
)
from bench.load import vegeta, wrk
from tests.helpers import http


def http_figure(
    name: str, url: str, proc: subprocess.Popen, seconds: int, headers: dict, body: dict | None = None
) -> dict:
    """Best wrk rate over 8/32/128 connections, CPU per request, and latency at half that rate."""
    rates = {}
    cpu_before = cpu_seconds_of_children(proc.pid)
    requests = 0.0
    for connections in (8, 32, 128):
        rates[connections] = wrk(url, connections, seconds, headers, body)
        requests += rates[connections] * seconds
    cpu_ms = (cpu_seconds_of_children(proc.pid) - cpu_before) * 1000 / requests
    best = max(rates.values())
    latency = vegeta(url, max(1, int(best / 2)), seconds, headers, body)
    result = {"rates": rates, "best": best, "cpu_ms_per_request": cpu_ms, "half_rate": latency}
    DETAILS[name] = result
    say(
        f"{name}: best {best:.0f} req/s, {cpu_ms:.2f} CPU ms/request, "
        f"p99 {latency['p99_ms']:.1f} ms at {latency['rate']}/s"
    )
    return result


def bench_http(seconds: int) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    with gunicorn("bench.bare_apps:plain", {}, probe="/ping") as (url, proc):
        bare = http_figure("bare_flask", url + "/ping", proc, seconds, {})
    with gunicorn("bench.bare_apps:with_jwt", {}, probe="/ping") as (url, proc):
        bare_jwt = http_figure("bare_flask_jwt", url + "/ping", proc, seconds, auth)
    device = f"bench-{uuid.uuid4().hex[:8]}"
    # as deployed: INFO, one JSON log line per request (to a file); limits out of the way
    api_env = {"CACHE_TTL_SECONDS": "3600", "RATE_LIMIT_EVENTS": "10000000/second", "LOG_LEVEL": "INFO"}
    with gunicorn("wsgi:app", api_env) as (url, proc):
        body = {"device_id": device, "payload": {"status": "online"}}
        assert http("POST", f"{url}/events", auth["Authorization"].removeprefix("Bearer "), body)[0] == 202
        store_resource(device)  # no worker runs here: the row the GETs read is stored directly
        hit = http_figure("get_hit", f"{url}/resource/{device}", proc, seconds, auth)
        post = http_figure("post_worker_stopped", f"{url}/events", proc, seconds, auth,
                           {"device_id": device, "payload": {"status": "online", "temp_c": 37.2}})  # fmt: skip
    forget_resource(device)
    base = bare["best"]
    ROWS.append(Row("bare Flask + PyJWT, req/s", bare_jwt["best"], base, "bare Flask", "req/s"))
    ROWS.append(Row("GET /resource/<id>, cache hit, req/s", hit["best"], base, "bare Flask", "req/s",
                    "P3 >= 0.6x bare Flask", hit["best"] / base >= 0.6))  # fmt: skip
    ROWS.append(Row("POST /events, worker stopped, req/s", post["best"], base, "bare Flask", "req/s",
                    "P2 >= 0.4x bare Flask", post["best"] / base >= 0.4))  # fmt: skip
    bare_cpu = bare["cpu_ms_per_request"]
    ROWS.append(Row("CPU ms per GET hit (gunicorn)", hit["cpu_ms_per_request"], bare_cpu, "bare Flask", "ms"))
    ROWS.append(Row("CPU ms per POST (gunicorn)", post["cpu_ms_per_request"], bare_cpu, "bare Flask", "ms"))
    DETAILS["post_max_rate"] = post["best"]
