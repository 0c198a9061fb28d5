"""The local stack's three servers, reached through the same client libraries the code uses."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import text

from broker.brokers.kafka import client_options

pytestmark = pytest.mark.stack


def test_kafka_round_trip_keeps_the_key(settings, make_topic, group_id):
    topic = make_topic(partitions=3)
    options = client_options(**settings.kafka_options)
    producer = KafkaProducer(**options, acks="all")
    sent = {f"device-{i}".encode(): f"value-{i}".encode() for i in range(5)}
    for key, value in sent.items():
        producer.send(topic, key=key, value=value).get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(topic, group_id=group_id, auto_offset_reset="earliest", **options)
    received: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            received.update((r.key, r.value) for r in batch)
    consumer.close()
    assert received == sent


def test_postgres_round_trip_through_sqlalchemy(db_engine, unique):
    table = f"smoke_{unique}"
    with db_engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id text PRIMARY KEY, doc jsonb NOT NULL)"))
    try:
        with db_engine.begin() as conn:
            conn.execute(
                text(f"INSERT INTO {table} VALUES (:id, CAST(:doc AS jsonb))"),
                {"id": "a", "doc": json.dumps({"temp_c": 37.2})},
            )
        with db_engine.connect() as conn:
            row = conn.execute(text(f"SELECT doc, current_setting('server_version_num') FROM {table}")).one()
        assert row[0] == {"temp_c": 37.2}
        assert db_engine.dialect.driver == "psycopg2"
    finally:
        with db_engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {table}"))


def test_redis_round_trip(redis_client):
    key = f"smoke:{uuid.uuid4().hex}"
    try:
        assert redis_client.set(key, b'{"ok": true}', ex=30)
        assert redis_client.get(key) == b'{"ok": true}'
        assert 0 < redis_client.ttl(key) <= 30
    finally:
        redis_client.delete(key)


def test_every_postgresql_connection_carries_the_configured_timeouts(db_engine, settings):
    with db_engine.connect() as conn:
        statement = conn.execute(text("SHOW statement_timeout")).scalar_one()
        lock = conn.execute(text("SHOW lock_timeout")).scalar_one()
        client = conn.connection.dbapi_connection.get_dsn_parameters()  # libpq's side of the socket
    assert statement == f"{settings.db_statement_timeout_ms // 1000}s"
    assert lock == f"{settings.db_lock_timeout_ms // 1000}s"
    assert client["keepalives"] == "1" and client["keepalives_idle"] == str(settings.db_keepalives_idle_seconds)
    assert client["connect_timeout"] == str(settings.db_connect_timeout_seconds)
