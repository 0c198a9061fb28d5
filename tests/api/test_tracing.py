"""One trace from ``POST /events`` to the PostgreSQL row and the cache invalidation, with tracing on
(the SDK's in-memory exporter): the API half through Flask's test client onto a StubBroker, the
worker half by a Worker on the same broker running process_event against real PostgreSQL and Redis.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.trace import SpanKind

from app import create_app
from broker import StubBroker, Worker, set_broker
from broker.broker import _global_broker_or_none
from core import runtime, tracing
from core.logging import JsonLineFormatter
from core.wiring import build_clients
from tasks.events import EVENTS_TOPIC

pytestmark = pytest.mark.stack


@pytest.fixture
def traced_system(settings, traced, migrated):
    """An API and a worker runtime, both traced, sharing one StubBroker; global state restored after."""
    previous_broker = _global_broker_or_none()
    try:
        previous_clients = runtime.clients()
    except RuntimeError:
        previous_clients = None
    stub = StubBroker()
    app = create_app(settings, broker=stub)
    clients = build_clients(settings, broker=stub)
    tracing.instrument_clients(clients, traced.provider)  # what worker.py's build_broker does
    runtime.configure(clients)
    yield app, stub
    if previous_clients is not None:
        runtime.configure(previous_clients)
    if previous_broker is not None:
        set_broker(previous_broker)
    clients.engine.dispose()


def test_one_trace_runs_from_the_post_to_the_row_and_the_invalidation(traced_system, traced, make_token, device_id):
    app, stub = traced_system
    token = make_token(roles=("device",), sub=device_id)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonLineFormatter())
    task_log = logging.getLogger("tasks")
    task_log.addHandler(handler)
    level = task_log.level
    task_log.setLevel(logging.INFO)
    worker = Worker(stub, topics=[EVENTS_TOPIC], worker_threads=1, commit_interval_ms=20)
    try:
        response = app.test_client().post(
            "/events",
            json={"device_id": device_id, "payload": {"temp_c": 21.5}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202, response.get_json()
        worker.start()
        stub.join(EVENTS_TOPIC, timeout=20000)
    finally:
        worker.stop()
        task_log.removeHandler(handler)
        task_log.setLevel(level)

    spans = traced.finished()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.name == "POST /events" and server.attributes["http.route"] == "/events"
    (create,) = traced.finished(f"create {EVENTS_TOPIC}")
    (process,) = traced.finished(f"process {EVENTS_TOPIC}")
    trace_id = server.context.trace_id
    assert create.parent.span_id == server.context.span_id
    assert process.parent.span_id == create.context.span_id
    below = [s for s in spans if s.parent is not None and s.parent.span_id == process.context.span_id]
    sql = [s for s in below if s.attributes.get("db.system") == "postgresql"]
    assert any("INSERT INTO events" in s.attributes.get("db.statement", "") for s in sql), [s.name for s in below]
    assert any("resources" in s.attributes.get("db.statement", "") for s in sql)
    cache = [s for s in below if s.attributes.get("db.system") == "redis"]
    assert cache, [s.name for s in below]  # the invalidation (a Lua call fencing the key)
    assert all(s.context.trace_id == trace_id for s in [create, process, *below])
    assert "21.5" not in json.dumps([dict(s.attributes) for s in spans])  # no payload in any span

    (line,) = [json.loads(x) for x in lines.getvalue().splitlines() if "Processed message" in x]
    assert line["trace_id"] == f"{trace_id:032x}" and line["span_id"] == f"{process.context.span_id:016x}"
