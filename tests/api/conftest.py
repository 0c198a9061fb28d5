"""API fixtures: the app on real Kafka/PostgreSQL/Redis, a client, and a token factory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import jwt as pyjwt
import pytest
from sqlalchemy import text

from app import create_app
from broker import KafkaBroker
from core import runtime
from core.cache import cache_key, fence_key
from core.wiring import build_clients


@pytest.fixture(scope="session")
def migrated(settings) -> None:
    from core import migrate  # Alembic: for stack tests only, not at every worker's collection

    migrate.upgrade(settings.database_url)


@pytest.fixture(autouse=True)
def schema(request) -> None:
    """Stack tests get the current schema; fast tests (no server) skip the migration."""
    if request.node.get_closest_marker("stack"):
        request.getfixturevalue("migrated")


@pytest.fixture(scope="session")
def api_broker(settings) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(**settings.kafka_options, send_timeout_ms=3000)
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def app(settings, api_broker):
    return create_app(settings, broker=api_broker)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def task_runtime(settings):
    """What worker.py sets up before running process_event in this process."""
    return runtime.configure(build_clients(settings))


@pytest.fixture
def make_token(settings):
    def make(roles=("device", "user"), sub="device-tester", expires_in=3600, key=None, algorithm="HS256", **claims):
        payload = {"sub": sub, "roles": list(roles), "exp": dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)}
        payload.update(claims)
        return pyjwt.encode(payload, key or settings.jwt_secret, algorithm=algorithm)

    return make


@pytest.fixture
def auth(make_token):
    return {"Authorization": f"Bearer {make_token()}"}


@pytest.fixture
def device_id(unique, db_engine, redis_client) -> Iterator[str]:
    """A device id of this test's own; its rows and cache keys are removed afterwards."""
    device = f"device-{unique}"
    yield device
    with db_engine.begin() as conn:
        conn.execute(text("DELETE FROM events WHERE device_id = :d"), {"d": device})
        conn.execute(text("DELETE FROM resources WHERE id = :d"), {"d": device})
    redis_client.delete(cache_key(device), fence_key(device))
