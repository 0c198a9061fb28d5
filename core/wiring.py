"""Settings -> clients, in one place.

The API (``app.create_app``), the worker and the operator commands (``worker.py``) all build
their PostgreSQL engine, Redis client, resource cache and Kafka broker here, from one
:class:`~core.settings.Settings`. Nothing connects while building (the engine's pool, the Redis
client and the Kafka producer all connect on first use), so call this in each process after any
fork (gunicorn builds the app in each worker; ``worker.py`` in each child process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis
from sqlalchemy import Engine

from broker import Broker, KafkaBroker, Middleware
from core.cache import ResourceCache
from core.db import make_engine
from core.settings import Settings


@dataclass(frozen=True)
class Clients:
    """This process's connections to the outside world."""

    settings: Settings
    engine: Engine
    redis: redis.Redis
    resource_cache: ResourceCache
    broker: Broker


def make_redis(settings: Settings) -> redis.Redis:
    """A Redis client whose every wait is bounded (``REDIS_TIMEOUT_SECONDS``)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )


def make_broker(settings: Settings, middleware: Sequence[Middleware] | None = None) -> KafkaBroker:
    """The Kafka broker with the application's connection, dead-letter topic and timeouts."""
    return KafkaBroker(
        **settings.kafka_options,
        dead_letter_topic=settings.kafka_topic_dlq,
        delay_prefix=settings.kafka_delay_topic_prefix,
        assignor=settings.kafka_assignor,
        send_timeout_ms=settings.kafka_send_timeout_ms,
        middleware=middleware,
        consumer_options={
            "session_timeout_ms": settings.kafka_session_timeout_ms,
            "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
            "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
            "request_timeout_ms": settings.kafka_request_timeout_ms,
        },
    )


def build_clients(
    settings: Settings, *, broker: Broker | None = None, middleware: Sequence[Middleware] | None = None
) -> Clients:
    """Every client for this process; ``broker`` replaces the Kafka broker (tests pass a stub)."""
    client = make_redis(settings)
    return Clients(
        settings=settings,
        engine=make_engine(settings),
        redis=client,
        resource_cache=ResourceCache(client, settings.cache_ttl_seconds),
        broker=broker if broker is not None else make_broker(settings, middleware),
    )


def telemetry_prefix(settings: Settings) -> str:
    """Where the workers' telemetry lives in Redis: per consumer group (the console reads its group's)."""
    return f"telemetry:{settings.kafka_consumer_group}"
