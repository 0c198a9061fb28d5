"""Stopping real servers under the running app: Kafka (POST answers 503 fast, nothing accepted is
lost) and Redis (GET still answers from PostgreSQL). Each test starts the server again."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition as KTP

from app.services import services
from broker.brokers.kafka import client_options
from tests.helpers import position, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.stack]


def stack(*args: str) -> None:
    subprocess.run([str(ROOT / "scripts" / "stack"), *args], check=True, capture_output=True, timeout=180)


@pytest.fixture
def kafka_outage():
    yield lambda: stack("stop", "kafka")
    stack("up")  # always leave the stack running for the next test


@pytest.fixture
def redis_outage():
    yield lambda: stack("stop", "redis")
    stack("up")


def request_ids_in_kafka(settings, since: dict[KTP, int]) -> set[str]:
    consumer = KafkaConsumer(**client_options(**settings.kafka_options), enable_auto_commit=False)
    consumer.assign(list(since))
    for tp, offset in since.items():
        consumer.seek(tp, offset)
    ends = consumer.end_offsets(list(since))
    found: set[str] = set()
    deadline = time.monotonic() + 30
    while any(position(consumer, tp) < ends[tp] for tp in since) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            found.update(json.loads(record.value)["headers"].get("request_id", "") for record in batch)
    consumer.close()
    return found


def test_kafka_down_means_503_with_retry_after_quickly_and_nothing_accepted_is_lost(
    client, auth, settings, kafka_outage
):
    consumer = KafkaConsumer(**client_options(**settings.kafka_options))
    tps = [KTP("events-input", p) for p in consumer.partitions_for_topic("events-input")]
    start = consumer.end_offsets(tps)
    consumer.close()
    accepted: set[str] = set()

    def post(i: int):
        response = client.post("/events", json={"device_id": f"outage-{i}", "payload": {"i": i}}, headers=auth)
        if response.status_code == 202:
            accepted.add(response.json["request_id"])
        return response

    assert all(post(i).status_code == 202 for i in range(5))
    kafka_outage()
    for i in range(5, 8):
        began = time.monotonic()
        response = post(i)
        assert response.status_code == 503, response.json
        assert time.monotonic() - began < settings.kafka_send_timeout_ms / 1000 + 5
        assert response.headers["Retry-After"].isdigit() and response.json["error"] == "unavailable"
    ready = client.get("/readyz")  # the producer's own state, not a TCP probe
    assert ready.status_code == 503 and ready.json["checks"]["kafka"] == "unavailable"
    stack("up")
    wait_for(lambda: post(100).status_code == 202, timeout=60, message="POST accepted again after restart")
    assert all(post(i).status_code == 202 for i in range(8, 13))
    assert client.get("/readyz").json["checks"]["kafka"] == "ok"
    assert accepted <= request_ids_in_kafka(settings, start), "an event answered 202 is missing from Kafka"


def test_redis_down_reads_come_from_postgres_and_readiness_names_it(client, auth, app, redis_outage, unique):
    from core.resources import apply_event

    device = f"device-{unique}"
    apply_event(services(app).engine, {
        "request_id": str(uuid.uuid4()), "device_id": device, "user_id": "t",
        "received_at": "2026-11-24T12:00:00+00:00", "payload": {"ok": True},
    })  # fmt: skip
    redis_outage()
    response = client.get(f"/resource/{device}", headers=auth)
    assert response.status_code == 200 and response.json["payload"] == {"ok": True}
    assert response.headers["X-Cache"] == "MISS"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["redis"] == "unavailable"
    assert ready.json["checks"]["postgres"] == "ok"


def test_an_event_larger_than_kafka_accepts_gets_413_and_the_next_one_202(settings, api_broker, make_token, device_id):
    from app import create_app

    client = create_app(settings.replace(max_body_bytes=4_000_000), broker=api_broker).test_client()
    auth = {"Authorization": f"Bearer {make_token()}"}
    huge = {"device_id": device_id, "payload": {"blob": "x" * 1_500_000}}  # over Kafka's 1 MB record limit
    response = client.post("/events", json=huge, headers=auth)
    assert response.status_code == 413 and response.json["error"] == "request_entity_too_large"
    assert client.post("/events", json={"device_id": device_id, "payload": {}}, headers=auth).status_code == 202
