"""Idempotent retries (issue 9, item 3): the same Idempotency-Key from the same subject gets the
first answer and enqueues nothing; another body gets 422; and even without Redis the worker
stores a retried event once."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition as KTP
from sqlalchemy import text

from app import create_app
from app.idempotency import event_key
from broker.brokers.kafka import client_options
from tasks import process_event
from tests.helpers import position

pytestmark = pytest.mark.stack


def _input_end(settings) -> dict:
    consumer = KafkaConsumer(**client_options(**settings.kafka_options))
    try:
        tps = [KTP("events-input", p) for p in consumer.partitions_for_topic("events-input")]
        return consumer.end_offsets(tps)
    finally:
        consumer.close()


def _keys_since(settings, ends: dict) -> list[bytes]:
    """The keys of the records written to events-input since ``ends`` (other tests, and other
    people on a shared machine, write there too: count only what a test's own key names)."""
    consumer = KafkaConsumer(**client_options(**settings.kafka_options), enable_auto_commit=False)
    try:
        consumer.assign(list(ends))
        for tp, offset in ends.items():
            consumer.seek(tp, offset)
        now = consumer.end_offsets(list(ends))
        keys: list[bytes] = []
        deadline = time.monotonic() + 10
        while any(position(consumer, tp) < now[tp] for tp in ends) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                keys.extend(record.key for record in batch)
        return keys
    finally:
        consumer.close()


def _post(client, token, body, key):
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    return client.post("/events", json=body, headers=headers)


def test_a_retry_with_the_same_key_gets_the_first_answer_and_enqueues_nothing(
    client, make_token, device_id, unique, settings
):
    token, body = make_token(sub=f"sub-{unique}"), {"device_id": device_id, "payload": {"n": 1}}
    first = _post(client, token, body, f"retry-{unique}")
    assert first.status_code == 202
    end = _input_end(settings)
    again = _post(client, token, body, f"retry-{unique}")
    assert again.status_code == 202 and again.json["request_id"] == first.json["request_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert device_id.encode() not in _keys_since(settings, end)  # nothing enqueued the second time
    other_subject = _post(client, make_token(sub=f"other-{unique}"), body, f"retry-{unique}")
    assert other_subject.status_code == 202 and other_subject.json["request_id"] != first.json["request_id"]


def test_a_key_reused_with_another_body_is_422(client, make_token, device_id, unique):
    token = make_token(sub=f"sub-{unique}")
    assert _post(client, token, {"device_id": device_id, "payload": {"n": 1}}, f"k-{unique}").status_code == 202
    reused = _post(client, token, {"device_id": device_id, "payload": {"n": 2}}, f"k-{unique}")
    assert reused.status_code == 422 and reused.json["error"] == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "semi;colon"])
def test_a_malformed_key_is_400(client, make_token, device_id, key):
    response = _post(client, make_token(), {"device_id": device_id, "payload": {}}, key)
    assert response.status_code == 400 and "Idempotency-Key" in response.json["message"]


def test_without_redis_the_worker_still_stores_a_retried_event_once(
    settings, api_broker, make_token, device_id, unique, task_runtime, db_engine
):
    client = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0"), broker=api_broker).test_client()
    token, body = make_token(sub=f"sub-{unique}"), {"device_id": device_id, "payload": {"n": 1}}
    answers = [_post(client, token, body, f"no-redis-{unique}") for _ in range(2)]
    assert [a.status_code for a in answers] == [202, 202]  # the API could not tell: two request ids
    hashed = event_key(f"sub-{unique}", f"no-redis-{unique}")
    for answer in answers:  # what the worker receives for each
        process_event({"request_id": answer.json["request_id"], "device_id": device_id, "user_id": f"sub-{unique}",
                       "received_at": "2026-11-25T10:00:00+00:00", "payload": {"n": 1},
                       "idempotency_key": hashed})  # fmt: skip
    with db_engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM events WHERE device_id = :d"), {"d": device_id}).scalar()
        version = conn.execute(text("SELECT version FROM resources WHERE id = :d"), {"d": device_id}).scalar()
    assert (stored, version) == (1, 1)


def test_keys_live_idempotency_ttl_seconds_and_each_subject_claims_a_bounded_number(
    settings, api_broker, make_token, device_id, unique, redis_client
):
    """Redis runs with noeviction: a subject sending a new key with every event must not grow it
    without bound. Beyond the cap a key is not stored in Redis (the worker still dedupes it)."""
    client = create_app(
        settings.replace(idempotency_ttl_seconds=120, idempotency_max_keys_per_subject=2), broker=api_broker
    ).test_client()
    subject = f"sub-{unique}"
    token, body = make_token(sub=subject), {"device_id": device_id, "payload": {"n": 1}}
    answers = [_post(client, token, body, f"cap-{unique}-{i}") for i in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    stored = [redis_client.ttl(f"idempotency:{event_key(subject, f'cap-{unique}-{i}')}") for i in range(3)]
    assert 0 < stored[0] <= 120 and 0 < stored[1] <= 120 and stored[2] == -2  # the third is not in Redis
    assert _post(client, token, body, f"cap-{unique}-0").headers.get("Idempotent-Replayed") == "true"
    over = _post(client, token, body, f"cap-{unique}-2")
    assert over.status_code == 202 and over.json["request_id"] != answers[2].json["request_id"]
    assert _post(client, make_token(sub=f"other-{unique}"), body, f"cap-{unique}-9").status_code == 202
    assert redis_client.exists(f"idempotency:{event_key(f'other-{unique}', f'cap-{unique}-9')}")


def test_the_rate_limits_and_the_keys_claim_share_one_redis_round_trip(client, make_token, device_id, unique,
                                                                       monkeypatch):  # fmt: skip
    """A POST with a key sends Redis two commands: the one script (limits + claim), then the answer."""
    import redis

    token, body = make_token(sub=f"trip-{unique}"), {"device_id": device_id, "payload": {"n": 1}}
    assert _post(client, token, body, f"warm-{unique}").status_code == 202  # scripts loaded, pools open
    sent: list[str] = []
    execute = redis.Redis.execute_command

    def spy(self, *args, **options):
        sent.append(str(args[0]).upper())
        return execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", spy)
    assert _post(client, token, body, f"trip-{unique}").status_code == 202
    assert sent == ["EVALSHA", "SET"]
    replay = _post(client, token, body, f"trip-{unique}")  # the stored answer comes back in the same trip
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert sent == ["EVALSHA", "SET", "EVALSHA"]
