"""The architecture document's "How to Test" walk-through against real processes: the API under
gunicorn with gevent workers, and worker.py, both started as `make run` starts them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import text

from core.cache import cache_key, fence_key
from tests.helpers import free_port, http, start_group_at_end, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]


@pytest.fixture(scope="module")
def live(settings, tmp_path_factory) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("live")
    port, group = free_port(), f"e2e-{uuid.uuid4().hex[:8]}"
    start_group_at_end(settings.kafka_options, group, "events-input")
    metrics_dir = logs / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "APP_ENV": "development",
        "JWT_SECRET": "local-dev-secret",
        "POSTGRES_PASSWORD": settings.postgres_password,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_LEVEL": "INFO",
    }
    bin_dir = Path(sys.executable).parent
    api_log, worker_log = open(logs / "api.log", "wb"), open(logs / "worker.log", "wb")  # noqa: SIM115
    api = subprocess.Popen([str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                           stdout=api_log, stderr=subprocess.STDOUT)  # fmt: skip
    # the API's metrics directory is the API's alone; an *empty* value would still switch
    # prometheus_client to multiprocess mode and write *.db files into the working directory
    worker_env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    worker = subprocess.Popen([sys.executable, "worker.py", "run", "--group", group], cwd=ROOT, env=worker_env,
                              stdout=worker_log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _alive(url), timeout=60, message="gunicorn answers /healthz")
        yield {"url": url, "api_log": logs / "api.log", "worker_log": logs / "worker.log"}
    finally:
        for proc in (api, worker):
            proc.terminate()
        for proc in (api, worker):
            proc.wait(timeout=60)


def _alive(url: str) -> bool:
    try:
        return http("GET", f"{url}/healthz")[0] == 200
    except OSError:
        return False


def test_the_documented_walk_through_works_end_to_end(live, db_engine, redis_client):
    device = f"device-{uuid.uuid4().hex[:8]}"
    # step 2: a token minted exactly as the document does
    token = jwt.encode(
        {"sub": "device-tester", "roles": ["device", "user"], "exp": dt.datetime.utcnow() + dt.timedelta(hours=1)},
        "local-dev-secret",
        algorithm="HS256",
    )
    try:
        # step 3: produce an event
        event = {"device_id": device, "payload": {"status": "online", "temp_c": 37.2}}
        status, headers, body = http("POST", f"{live['url']}/events", token, event)
        assert status == 202
        accepted = json.loads(body)
        assert set(accepted) == {"request_id", "status"} and accepted["status"] == "accepted"
        assert uuid.UUID(accepted["request_id"]) and headers["X-Request-ID"] == accepted["request_id"]

        # step 4: the worker processes it and says so (device and request id, never the payload)
        def stored():
            with db_engine.connect() as conn:
                return conn.execute(text("SELECT payload, version FROM resources WHERE id = :d"), {"d": device}).first()

        row = wait_for(stored, timeout=60, message="the worker stored the event")
        assert row.payload == {"status": "online", "temp_c": 37.2} and row.version == 1
        processed = wait_for(
            lambda: [json.loads(line) for line in live["worker_log"].read_text().splitlines()
                     if '"Processed message"' in line and device in line],
            timeout=10,
        )  # fmt: skip
        assert processed[0]["device_id"] == device and processed[0]["request_id"] == accepted["request_id"]
        assert "temp_c" not in live["worker_log"].read_text()

        # step 5: the first read is a miss that fills Redis, the second a hit
        first = http("GET", f"{live['url']}/resource/{device}", token)
        second = http("GET", f"{live['url']}/resource/{device}", token)
        assert (first[0], first[1]["X-Cache"]) == (200, "MISS")
        assert (second[0], second[1]["X-Cache"]) == (200, "HIT")
        record = json.loads(second[2])
        assert record["id"] == device and record["payload"] == {"status": "online", "temp_c": 37.2}
        assert record["version"] == 1 and record["updated_at"].endswith("Z")
        assert json.loads(first[2]) == record

        # step 6: PostgreSQL has the row (above); Redis holds plain JSON, not pickle
        assert json.loads(redis_client.get(cache_key(device))) == record

        # one JSON access line per request, with no token in it
        api_lines = [json.loads(line) for line in live["api_log"].read_text().splitlines() if line.startswith("{")]
        posted = [r for r in api_lines if r.get("request_id") == accepted["request_id"]]
        assert posted and posted[0]["method"] == "POST" and posted[0]["status"] == 202 and posted[0]["duration_ms"] >= 0
        assert token not in live["api_log"].read_text()
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE device_id = :d"), {"d": device})
            conn.execute(text("DELETE FROM resources WHERE id = :d"), {"d": device})
        redis_client.delete(cache_key(device), fence_key(device))


def test_metrics_count_requests_across_gunicorn_workers_for_admins_only(live):
    for _ in range(20):
        http("GET", f"{live['url']}/healthz")
    assert http("GET", f"{live['url']}/metrics")[0] == 401
    admin = jwt.encode({"sub": "ops", "roles": ["admin"], "exp": int(time.time()) + 600}, "local-dev-secret")
    status, _, body = http("GET", f"{live['url']}/metrics", admin)
    assert status == 200
    text_ = body.decode()
    lines = [line for line in text_.splitlines() if line.startswith("http_requests_total{") and "/healthz" in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines) >= 20
    assert "http_request_duration_seconds_bucket" in text_


def test_readiness_and_openapi_are_served(live):
    status, _, body = http("GET", f"{live['url']}/readyz")
    assert status == 200 and json.loads(body)["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "ok"}
    status, _, body = http("GET", f"{live['url']}/openapi.json")
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {"/events", "/resource/{resource_id}"} <= set(spec["paths"])
    assert set(spec["components"]["schemas"]["Event"]["properties"]) == {"device_id", "payload"}


def test_hundreds_of_idle_keep_alive_connections_do_not_lock_new_clients_out(live):
    """Every gevent worker serves at most worker_connections connections, idle keep-alives
    included: 450 idle clients used to take every slot of 2 workers x 200 (issue 9)."""
    import socket

    host, port = live["url"].removeprefix("http://").split(":")
    idle = []
    try:
        for _ in range(450):
            conn = socket.create_connection((host, int(port)), timeout=10)
            idle.append(conn)
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            try:
                answer = conn.recv(1024)
            except TimeoutError:
                raise AssertionError(f"connection {len(idle)} got no answer: the idle ones hold every slot") from None
            assert answer.startswith(b"HTTP/1.1 200")  # answered, then held open and idle
        began = time.monotonic()
        status, _, _ = http("GET", f"{live['url']}/healthz")
        assert status == 200 and time.monotonic() - began < 3
    finally:
        for conn in idle:
            conn.close()
