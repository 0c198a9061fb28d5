"""One trace across two real processes: the API under gunicorn+gevent and worker.py, through real
Kafka, both with ``OTEL_TRACES_EXPORTER=console`` (spans written as JSON to their stdout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from core.cache import cache_key, fence_key
from tests.helpers import free_port, http, start_group_at_end, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]


def json_objects(path: Path) -> list[dict]:
    """Every JSON object in a process's output: one-line log records and indented console spans."""
    text_ = path.read_text(errors="replace")
    decoder, found, position = json.JSONDecoder(), [], 0
    while (start := text_.find("{", position)) != -1:
        if start and text_[start - 1] != "\n":
            position = start + 1
            continue
        try:
            obj, end = decoder.raw_decode(text_, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        found.append(obj)
        position = end
    return found


@pytest.fixture(scope="module")
def traced_live(settings, tmp_path_factory) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("traced-live")
    port, group = free_port(), f"trace-{uuid.uuid4().hex[:8]}"
    start_group_at_end(settings.kafka_options, group, "events-input")
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "APP_ENV": "development",
        "JWT_SECRET": "local-dev-secret",
        "POSTGRES_PASSWORD": settings.postgres_password,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "INFO",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not 5 s
    }
    bin_dir = Path(sys.executable).parent
    api_log, worker_log = open(logs / "api.log", "wb"), open(logs / "worker.log", "wb")  # noqa: SIM115
    api = subprocess.Popen([str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                           stdout=api_log, stderr=subprocess.STDOUT)  # fmt: skip
    worker = subprocess.Popen([sys.executable, "worker.py", "run", "--group", group], cwd=ROOT, env=env,
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


def test_the_worker_continues_the_apis_trace_and_both_processes_log_its_id(
    traced_live, db_engine, redis_client, make_token
):
    device = f"device-trace-{uuid.uuid4().hex[:8]}"
    token = make_token(roles=("device",), sub=device, expires_in=300, key="local-dev-secret")  # the servers' secret
    try:
        status, headers, _ = http("POST", f"{traced_live['url']}/events", token, {"device_id": device, "payload": {}})
        assert status == 202
        request_id = headers["X-Request-ID"]

        def worker_line() -> dict | None:
            lines = json_objects(traced_live["worker_log"])
            return next(
                (o for o in lines if o.get("message") == "Processed message" and o.get("device_id") == device), None
            )

        processed = wait_for(worker_line, timeout=60, message="the worker processed the event")
        trace_id = processed["trace_id"]

        def spans(log: str) -> list[dict]:
            return [
                o for o in json_objects(traced_live[log]) if o.get("context", {}).get("trace_id") == f"0x{trace_id}"
            ]

        def named(log: str, *names: str) -> list[dict] | None:
            """The log's spans of this trace once every one of ``names`` is among them: spans are
            exported in batches as they end, a parent after its children, so wait for them all."""
            found = spans(log)
            return found if set(names) <= {s["name"] for s in found} else None

        api_spans = wait_for(lambda: named("api_log", "POST /events", "create events-input"), timeout=30,
                             message="the API's spans")  # fmt: skip
        worker_spans = wait_for(lambda: named("worker_log", "process events-input"), timeout=30,
                                message="the worker's message span")  # fmt: skip
        by_name = {s["name"]: s for s in api_spans + worker_spans}
        server, create = by_name["POST /events"], by_name["create events-input"]
        process = by_name["process events-input"]
        assert create["parent_id"] == server["context"]["span_id"]
        assert process["parent_id"] == create["context"]["span_id"]  # across processes, through Kafka
        assert (
            process["kind"] == "SpanKind.CONSUMER"
            and process["resource"]["attributes"]["service.name"] == "device-worker"
        )
        assert server["resource"]["attributes"]["service.name"] == "device-api"
        assert any(s["attributes"].get("db.system") == "postgresql" for s in worker_spans)
        # the API's request line carries the same trace
        request_lines = [o for o in json_objects(traced_live["api_log"]) if o.get("request_id") == request_id]
        assert request_lines and all(o.get("trace_id") == trace_id for o in request_lines)
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE device_id = :d"), {"d": device})
            conn.execute(text("DELETE FROM resources WHERE id = :d"), {"d": device})
        redis_client.delete(cache_key(device), fence_key(device))
