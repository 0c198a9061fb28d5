"""The local stack's three servers, reached through the same client libraries the code uses."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import text

from broker.brokers.kafka import client_options
from tests.helpers import ROOT

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


def _postgres_socket_dir() -> Path:
    out = subprocess.run([str(ROOT / "scripts" / "stack"), "env"], capture_output=True, text=True, check=True).stdout
    return Path(next(line.rsplit(": ", 1)[1] for line in out.splitlines() if "unix socket folder" in line))


def test_local_postgresql_accepts_only_password_logins_through_a_private_socket_folder(settings):
    """Issue 14, item 4: before, the socket took `trust` logins and any local OS user could reach
    it, so anyone on the machine was the superuser."""
    folder = _postgres_socket_dir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for host in (str(folder), settings.postgres_host):  # the socket, then loopback TCP
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=host, port=settings.postgres_port, user="postgres", dbname="postgres",
                             password="", connect_timeout=5)  # fmt: skip
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host=host, port=settings.postgres_port, user=settings.postgres_user,
                             dbname=settings.postgres_db, password="wrong", connect_timeout=5)  # fmt: skip
    app_login = {"user": settings.postgres_user, "dbname": settings.postgres_db, "password": settings.postgres_password}
    psycopg2.connect(host=settings.postgres_host, port=settings.postgres_port, connect_timeout=5, **app_login).close()
    if os.getuid() == 0 and shutil.which("runuser"):  # another OS user cannot even reach the socket
        other = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", str(folder)])
        assert other.returncode != 0
