"""The benchmark's storage section (``--only storage``): ``process_event`` drained by ``worker.py``
from Kafka into PostgreSQL, against the raw ceiling of batched upserts from one process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import time
import uuid

from bench.common import DETAILS, ROWS, Row, db_engine, forget_resource, say, start_worker
from tests.helpers import wait_for


def _events(run: str, devices: int, rounds: int) -> list[dict]:
    start = dt.datetime.now(dt.UTC)
    return [{"request_id": str(uuid.uuid4()), "device_id": f"bench-{run}-{d}", "user_id": "bench",
             "received_at": (start + dt.timedelta(milliseconds=r)).isoformat(), "payload": {"round": r, "temp_c": 20.5}}
            for r in range(rounds) for d in range(devices)]  # fmt: skip


def bench_storage(devices: int, rounds: int) -> None:
    """The raw ceiling: one process writes the rows process_event writes (the audit row and the
    newest-wins upsert) with batched INSERT ... ON CONFLICT, 500 rows a statement, one transaction
    per 500 events. Then the same events through Kafka and worker.py (2 processes x 8 threads),
    clock from starting the worker to the group's committed offsets reaching the end."""
    from kafka import KafkaAdminClient

    from broker.brokers.kafka.admin import consumer_lag
    from core.resources import apply_events
    from core.settings import load_settings
    from core.wiring import make_broker
    from tasks.events import process_event

    settings = load_settings(require_jwt=False)
    engine = db_engine()
    run = uuid.uuid4().hex[:8]
    events = _events(run, devices, rounds)
    started = time.perf_counter()
    for i in range(0, len(events), 500):  # each chunk lies within one round: distinct devices
        apply_events(engine, events[i : i + 500])
    ceiling = len(events) / (time.perf_counter() - started)
    forget_resource(*{e["device_id"] for e in events})
    say(f"raw ceiling: {ceiling:.0f} events/s")

    run = uuid.uuid4().hex[:8]
    events = _events(run, devices, rounds)
    topic, group = f"bench-events-{run}", f"bench-events-{run}"
    broker = make_broker(settings)
    admin = KafkaAdminClient(**broker.client_options)
    admin.create_topics({topic: {"num_partitions": 6, "replication_factor": 1}})
    admin.wait_for_topics([topic])
    try:
        broker.enqueue_many(dataclasses.replace(process_event.message(e), topic=topic) for e in events)
        started = time.perf_counter()
        proc = start_worker(["--topics", topic, "--group", group])
        try:
            # The finish line is probed every 20 ms beside the worker, so it must be cheap: the
            # run's 2,000 resources by primary key, not a count over the growing events table.
            tenth = stored_at_tenth = None
            while True:
                started_devices, finished_devices = _devices_progress(engine, run, rounds - 1)
                if tenth is None and started_devices == devices:
                    tenth, stored_at_tenth = time.perf_counter(), _stored(engine, run)
                if finished_devices == devices and _stored(engine, run) == len(events):
                    break
                if proc.poll() is not None or time.perf_counter() - started > 600:
                    raise SystemExit("bench: the worker did not drain the events")
                time.sleep(0.02)
            finished = time.perf_counter()
            drained = len(events) / (finished - started)
            steady = (len(events) - stored_at_tenth) / (finished - tenth)
            wait_for(lambda: consumer_lag(broker.client_options, group, [topic])["total_lag"] == 0, timeout=60,
                     message="every offset committed")  # fmt: skip
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    finally:
        admin.delete_topics([topic])
        admin.close()
        broker.close()
        forget_resource(*{e["device_id"] for e in events})
    say(f"process_event drain: {drained:.0f} events/s, steady {steady:.0f}/s")
    DETAILS["storage"] = {"events": len(events), "devices": devices, "raw_ceiling": ceiling, "drain": drained,
                          "steady": steady}  # fmt: skip
    ROWS.append(Row("process_event drain, start-up included, events/s", drained, ceiling, "raw batched upsert",
                    "events/s"))  # fmt: skip
    ROWS.append(Row("process_event drain, steady state, events/s", steady, ceiling, "raw batched upsert",
                    "events/s", "P4 >= 0.5x", steady / ceiling >= 0.5))  # fmt: skip


def _devices_progress(engine, run: str, last_round: int) -> tuple[int, int]:
    """How many of the run's devices have a stored event, and how many are at ``last_round``
    (per-device order: a device at its last round has every event of the run stored)."""
    from sqlalchemy import text

    query = text("SELECT count(*), count(*) FILTER (WHERE (payload->>'round')::int = :last) "
                 "FROM resources WHERE id LIKE :p")  # fmt: skip
    with engine.connect() as conn:
        started, finished = conn.execute(query, {"p": f"bench-{run}-%", "last": last_round}).one()
    return started, finished


def _stored(engine, run: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        query = text("SELECT count(*) FROM events WHERE device_id LIKE :p")
        return conn.execute(query, {"p": f"bench-{run}-%"}).scalar()
