"""What tracing costs: CPU per ``POST /events`` and per worker message, tracing off vs on.

    python -m bench.tracing_cost [--rounds 8] [--block 200] [--ratio 1.0]

``--ratio`` samples the traced arm parent-based (the worker follows the sender's decision).

One process, interleaved A/B: rounds alternate the order (off-on, on-off, ...), each block runs
``--block`` requests or messages with tracing off or on, and the figure is the process's CPU time
(user + system, every thread: ``time.process_time``) per request or message, so the span export
thread is counted too. The API half is Flask's test client on the real app (JWT, rate limits in
Redis, validation, the request log line), sending into a StubBroker (Kafka's producer is left out,
the same in both arms: the ratio overstates tracing's share of a real request). The worker half
is a Worker on a StubBroker running process_event against real PostgreSQL and Redis, 4 events per
device, so ready messages go in batches as they do under load. With tracing on, spans go through
the SDK's BatchSpanProcessor to an exporter that encodes them as OTLP protobuf and drops the
bytes (a collector's network round trip is not counted); each traced block flushes its spans
inside its clock, and the spans of the bench's own sends are flushed before it starts. Needs the
local stack; writes its own devices' rows and keys and deletes them afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = {
    "APP_ENV": "test",
    "JWT_SECRET": "local-dev-secret",
    "POSTGRES_PASSWORD": "apppass",
    "LOG_LEVEL": "INFO",
    "RATE_LIMIT_EVENTS": "1000000/second",
}


class EncodingExporter:
    """Encodes each batch as the OTLP/HTTP exporter would, then drops it."""

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self._encode = encode_spans
        self.spans = 0

    def export(self, spans):  # type: ignore[no-untyped-def]
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._encode(spans).SerializeToString()
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--ratio", type=float, default=1.0, help="parent-based ratio sampling of the traced arm")

    args = parser.parse_args()

    import jwt as pyjwt
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    from sqlalchemy import text

    from app import create_app
    from broker import StubBroker, Worker, set_broker
    from core import migrate, runtime, tracing
    from core.cache import cache_key, fence_key
    from core.logging import configure_logging
    from core.settings import load_settings
    from core.wiring import build_clients
    from tasks import process_event
    from tasks.events import EVENTS_TOPIC

    settings = load_settings({**ENV, **os.environ})
    migrate.upgrade(settings.database_url)
    configure_logging("INFO")
    sink = io.StringIO()
    logging.getLogger().handlers[0].stream = sink  # the lines are formatted, then dropped

    exporter = EncodingExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(args.ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    run_id = uuid.uuid4().hex[:8]
    devices: list[str] = []

    arms: dict[str, dict] = {}
    for arm in ("off", "on"):
        tracing.use_provider(provider if arm == "on" else None)
        api_broker, worker_broker = StubBroker(), StubBroker()
        app = create_app(settings, broker=api_broker)
        worker_broker.declare_actor(process_event)
        clients = build_clients(settings, broker=worker_broker)
        if arm == "on":
            tracing.instrument_clients(clients, provider)
            tracing.trace_broker(worker_broker, provider)
        worker = Worker(worker_broker, topics=[EVENTS_TOPIC], worker_threads=1, commit_interval_ms=50)
        arms[arm] = {"app": app, "client": app.test_client(), "clients": clients, "broker": worker_broker,
                     "worker": worker, "api_broker": api_broker}  # fmt: skip
    tracing.use_provider(None)

    def token_for(device: str) -> str:
        payload = {"sub": device, "roles": ["device"], "exp": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)}
        return pyjwt.encode(payload, settings.jwt_secret, algorithm="HS256")

    def post_block(arm: str, n: int) -> float:
        a = arms[arm]
        device = f"bench-otel-{run_id}-{len(devices)}"
        devices.append(device)
        headers = {"Authorization": f"Bearer {token_for(device)}"}
        body = {"device_id": device, "payload": {"temp_c": 21.5}}
        set_broker(a["api_broker"])  # process_event.send goes through the global broker
        a["client"].post("/events", json=body, headers=headers)  # warm the token cache
        provider.force_flush()  # spans of earlier blocks are exported before the clock starts
        start = time.process_time()
        for _ in range(n):
            response = a["client"].post("/events", json=body, headers=headers)
            assert response.status_code == 202, response.get_data()
        if arm == "on":
            provider.force_flush()  # and this block's inside it
        return (time.process_time() - start) / n

    def worker_block(arm: str, n: int) -> float:
        a = arms[arm]
        broker = a["broker"]
        runtime.configure(a["clients"])
        base = dt.datetime.now(dt.UTC)
        for i in range(n):
            device = f"bench-otel-{run_id}-w{len(devices)}"
            if i % 4 == 0:
                devices.append(device)
            event = {"request_id": str(uuid.uuid4()), "device_id": devices[-1], "user_id": "bench",
                     "received_at": (base + dt.timedelta(milliseconds=i)).isoformat(), "payload": {"n": i}}  # fmt: skip
            message = process_event.message_with_options(args=(event,), key=devices[-1])
            if arm == "on":
                with provider.get_tracer("bench").start_as_current_span("POST /events"):
                    broker.enqueue(message)
            else:
                broker.enqueue(message)
        provider.force_flush()  # the senders' spans are not the worker's cost
        start = time.process_time()
        if not a.get("started"):
            a["worker"].start()
            a["started"] = True
        broker.join(EVENTS_TOPIC, timeout=120000)
        if arm == "on":
            provider.force_flush()
        return (time.process_time() - start) / n

    results: dict[str, dict[str, list[float]]] = {"post": {"off": [], "on": []}, "message": {"off": [], "on": []}}
    try:
        for phase, block in (("post", post_block), ("message", worker_block)):
            for arm in ("off", "on"):  # warm-up, not counted
                tracing.use_provider(provider if arm == "on" else None)
                block(arm, max(20, args.block // 5))
            for r in range(args.rounds):
                for arm in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    tracing.use_provider(provider if arm == "on" else None)
                    results[phase][arm].append(block(arm, args.block) * 1e6)
            provider.force_flush()
    finally:
        tracing.use_provider(None)
        for a in arms.values():
            if a.get("started"):
                a["worker"].stop()
        engine = arms["off"]["clients"].engine
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE device_id LIKE :p"), {"p": f"bench-otel-{run_id}-%"})
            conn.execute(text("DELETE FROM resources WHERE id LIKE :p"), {"p": f"bench-otel-{run_id}-%"})
        redis = arms["off"]["clients"].redis
        for device in devices:
            redis.delete(cache_key(device), fence_key(device))
        provider.shutdown()

    report = {"ratio": args.ratio, "rounds": args.rounds, "block": args.block, "figures": {}}
    report["spans_exported"] = exporter.spans
    print(f"{'figure':<28}{'off us':>10}{'on us':>10}{'on/off':>9}  ratio range (per round)")
    for phase, label in (("post", "CPU per POST /events"), ("message", "CPU per worker message")):
        off, on = results[phase]["off"], results[phase]["on"]
        ratios = sorted(b / a for a, b in zip(off, on, strict=True))
        median_off, median_on = statistics.median(off), statistics.median(on)
        report["figures"][phase] = {"off_us": off, "on_us": on, "ratios": ratios}
        print(
            f"{label:<28}{median_off:>10.0f}{median_on:>10.0f}{median_on / median_off:>9.2f}"
            f"  {ratios[0]:.2f}-{ratios[-1]:.2f}"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
