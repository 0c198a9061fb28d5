"""One event's trace read back from a real Jaeger: the API under gunicorn+gevent and worker.py, both
exporting OTLP over HTTP to a Jaeger v2 (``stack/jaeger.yaml``, the binary ``make test`` builds
from its Go module), and the trace fetched through Jaeger's query API: the request, the send, the
worker's failed first attempt, its retry, and the retry's PostgreSQL writes, all in one trace."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.cache import cache_key, fence_key
from tests.helpers import free_port, http, start_group_at_end, stop_processes, wait_for, worker_environ

ROOT = Path(__file__).resolve().parents[2]
# the devices whose first attempt fails in this run's worker (tests/api/flaky_events.py, not
# imported here: importing it patches the task)
FLAKY_PREFIX = f"device-flaky-{uuid.uuid4().hex[:6]}-"
pytestmark = [pytest.mark.slow, pytest.mark.stack]


def jaeger_binary() -> Path:
    """The Jaeger ``make test`` builds (JAEGER_BIN), else the one ``make traces`` left in .stack/bin."""
    if os.environ.get("JAEGER_BIN"):
        path = Path(os.environ["JAEGER_BIN"])
        assert path.is_file(), f"JAEGER_BIN={path} does not exist"
        return path
    path = ROOT / ".stack" / "bin" / "jaeger"
    if not path.is_file():
        pytest.skip("no Jaeger here: `make test` builds it from its Go module (`make .stack/bin/jaeger`)")
    return path


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _get_json(url: str) -> Any:
    try:
        status, _, body = http("GET", url)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory) -> Iterator[dict]:
    """A Jaeger of this test's own on free loopback ports, its traces in memory."""
    binary = jaeger_binary()
    otlp, query, query_grpc = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("jaeger") / "jaeger.log"
    env = {
        **os.environ,
        "JAEGER_OTLP_HTTP": f"127.0.0.1:{otlp}",
        "JAEGER_QUERY_HTTP": f"127.0.0.1:{query}",
        "JAEGER_QUERY_GRPC": f"127.0.0.1:{query_grpc}",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "--config", str(ROOT / "stack" / "jaeger.yaml")], env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    query_url = f"http://127.0.0.1:{query}"
    try:
        wait_for(lambda: proc.poll() is not None or (_listening(otlp) and _get_json(f"{query_url}/api/services")),
                 timeout=60, message="Jaeger's OTLP receiver and query API answer")  # fmt: skip
        assert proc.poll() is None, f"Jaeger exited: {log.read_text(errors='replace')[-2000:]}"
        yield {"otlp": f"http://127.0.0.1:{otlp}", "query": query_url, "log": log}
    finally:
        stop_processes([proc])


@pytest.fixture(scope="module")
def traced_system(settings, jaeger, tmp_path_factory) -> Iterator[str]:
    """gunicorn+gevent and worker.py (with tests.api.flaky_events), both exporting to ``jaeger``."""
    logs = tmp_path_factory.mktemp("jaeger-system")
    port, group = free_port(), f"jaeger-{uuid.uuid4().hex[:8]}"
    start_group_at_end(settings.kafka_options, group, "events-input")
    env = {
        **{k: v for k, v in worker_environ(settings).items() if not k.startswith("OTEL_")},
        "APP_ENV": "development",
        "JWT_SECRET": "local-dev-secret",
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger["otlp"],
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not 5 s
        "FLAKY_DEVICE_PREFIX": FLAKY_PREFIX,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    bin_dir = Path(sys.executable).parent
    api_log, worker_log = open(logs / "api.log", "wb"), open(logs / "worker.log", "wb")  # noqa: SIM115
    procs = [
        subprocess.Popen([str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                         stdout=api_log, stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "worker.py", "run", "tasks", "tests.api.flaky_events", "--group", group],
                         cwd=ROOT, env=env, stdout=worker_log, stderr=subprocess.STDOUT),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get_json(f"{url}/healthz") is not None, timeout=60, message="gunicorn answers /healthz")
        yield url
    finally:
        stop_processes(procs, timeout=60)
        api_log.close()
        worker_log.close()


def _tags(span: dict) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def _parent(span: dict) -> str | None:
    return next((ref["spanID"] for ref in span.get("references", []) if ref["refType"] == "CHILD_OF"), None)


def _events(span: dict) -> list[str]:
    """The names of a span's events (Jaeger shows an OTLP event as a log with an ``event`` field)."""
    return [field["value"] for log in span.get("logs", []) for field in log["fields"] if field["key"] == "event"]


def test_one_events_trace_from_post_to_the_postgresql_write_with_its_retry_reads_back_from_jaeger(
    jaeger, traced_system, db_engine, redis_client, make_token
):
    device = f"{FLAKY_PREFIX}{uuid.uuid4().hex[:6]}"
    token = make_token(roles=("device",), sub=device, expires_in=300, key="local-dev-secret")  # the servers' secret
    try:
        status, _, _ = http("POST", f"{traced_system}/events", token, {"device_id": device, "payload": {"n": 1}})
        assert status == 202

        # find the trace through the query API's search: the worker's spans carry the message key
        tags = urllib.parse.quote(json.dumps({"messaging.kafka.message.key": device}))
        search = f"{jaeger['query']}/api/traces?service=device-worker&tags={tags}&lookback=1h&limit=10"

        def found() -> list[dict] | None:
            body = _get_json(search)
            return body["data"] if body and body.get("data") else None

        traces = wait_for(found, timeout=60, message="Jaeger holds a trace with this event's worker spans")
        assert len({t["traceID"] for t in traces}) == 1, "the event's attempts are in one trace"
        trace_id = traces[0]["traceID"]

        def complete() -> dict | None:
            """The trace once both attempts and the retry's writes are in (spans arrive in batches
            as they end: a parent after its children, the retry about 2 s after the failure)."""
            body = _get_json(f"{jaeger['query']}/api/traces/{trace_id}")
            if not body or not body.get("data"):
                return None
            trace = body["data"][0]
            names = [s["operationName"] for s in trace["spans"]]
            writes = [s for s in trace["spans"] if _tags(s).get("db.statement", "").startswith("INSERT")]
            ready = {"POST /events", "create events-input"} <= set(names) and names.count("process events-input") == 2
            return trace if ready and len(writes) >= 2 else None

        trace = wait_for(complete, timeout=60, message="the trace holds the request, both attempts and the writes")
        services = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
        spans = trace["spans"]
        assert all(s["traceID"] == trace_id for s in spans)
        by_id = {s["spanID"]: s for s in spans}

        (server,) = [s for s in spans if s["operationName"] == "POST /events"]
        (create,) = [s for s in spans if s["operationName"] == "create events-input"]
        assert services[server["processID"]] == services[create["processID"]] == "device-api"
        assert _tags(server)["span.kind"] == "server" and _tags(server)["http.status_code"] == 202
        assert _parent(server) is None  # the trace starts at the request
        assert _parent(create) == server["spanID"] and _tags(create)["span.kind"] == "producer"

        attempts = sorted((s for s in spans if s["operationName"] == "process events-input"),
                          key=lambda s: _tags(s)["broker.attempt"])  # fmt: skip
        first, retry = attempts
        for attempt in attempts:
            assert services[attempt["processID"]] == "device-worker"
            assert _parent(attempt) == create["spanID"]  # across processes, through the Kafka headers
            assert _tags(attempt)["span.kind"] == "consumer"
            assert _tags(attempt)["messaging.kafka.message.key"] == device
        assert [_tags(first)["broker.attempt"], _tags(retry)["broker.attempt"]] == [1, 2]
        assert _tags(first).get("error") is True and _tags(first)["otel.status_code"] == "ERROR"
        assert _events(first) == ["retry"]
        assert retry["startTime"] >= first["startTime"] + first["duration"]  # after the failure and its backoff
        assert _tags(retry).get("otel.status_code") != "ERROR" and not _events(retry)

        # the writes are the retry's: the resource's upsert and the event's audit row
        children = [s for s in spans if _parent(s) == retry["spanID"]]
        statements = [_tags(s).get("db.statement", "") for s in children if _tags(s).get("db.system") == "postgresql"]
        assert any(st.startswith("INSERT INTO resources") for st in statements), statements
        assert any(st.startswith("INSERT INTO events") for st in statements), statements
        assert not [s for s in spans if _parent(s) == first["spanID"] and _tags(s).get("db.system") == "postgresql"]
        assert all(_parent(s) in by_id for s in spans if s is not server), "every span hangs in this trace"

        with db_engine.connect() as conn:  # and the write the trace shows did happen
            assert conn.execute(text("SELECT count(*) FROM events WHERE device_id = :d"), {"d": device}).scalar() == 1
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE device_id = :d"), {"d": device})
            conn.execute(text("DELETE FROM resources WHERE id = :d"), {"d": device})
        redis_client.delete(cache_key(device), fence_key(device))


def test_trace_tree_prints_the_newest_trace_from_jaegers_query_api(
    jaeger, traced_system, db_engine, redis_client, make_token
):
    """scripts/trace_tree.py, the terminal's view of a trace (the module's Jaeger has no UI)."""
    device = f"device-tree-{uuid.uuid4().hex[:8]}"
    token = make_token(roles=("device",), sub=device, expires_in=300, key="local-dev-secret")  # the servers' secret
    try:
        status, _, _ = http("POST", f"{traced_system}/events", token, {"device_id": device, "payload": {}})
        assert status == 202

        def printed() -> list[str] | None:
            """The script's lines once the trace holds the request, the worker's span (each exported
            after its children, possibly in a later batch: CI once saw the writes first) and its writes."""
            result = subprocess.run([sys.executable, "scripts/trace_tree.py", "--query", jaeger["query"]], cwd=ROOT,
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
            lines = result.stdout.splitlines()
            done = (len(lines) > 1 and lines[1].startswith("POST /events") and any(device in line for line in lines)
                    and any(line.lstrip().startswith("process events-input") for line in lines)
                    and any("INSERT" in line for line in lines))  # fmt: skip
            return lines if result.returncode == 0 and done else None

        lines = wait_for(printed, timeout=60, interval=0.5, message="trace_tree prints this event's trace")
        assert lines[0].startswith("trace ") and "device-api, device-worker" in lines[0]
        indents = {line.split()[0]: len(line) - len(line.lstrip()) for line in lines[1:]}
        assert indents["POST"] == 0  # the request is the root, each hop one level below the one before
        assert indents["create"] == 2 and indents["process"] == 4 and indents["INSERT"] == 6
        (process,) = [line for line in lines if line.lstrip().startswith("process events-input")]
        assert "device-worker" in process and "attempt=1" in process and f"key={device}" in process
    finally:
        with db_engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE device_id = :d"), {"d": device})
            conn.execute(text("DELETE FROM resources WHERE id = :d"), {"d": device})
        redis_client.delete(cache_key(device), fence_key(device))
