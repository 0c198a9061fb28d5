"""Per-process resources of the API: the clients (from :mod:`core.wiring`) and Redis's health.

Built by ``create_app`` (in each gunicorn worker, after fork); reached via :func:`services`.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import current_app
from sqlalchemy import Engine

from core.cache import ResourceCache
from core.resources import ResourceRecord
from core.singleflight import SingleFlight
from core.wiring import Clients

log = logging.getLogger(__name__)


@dataclass
class Services:
    clients: Clients
    redis_retry_after_s: float = 5.0
    _redis_down_until: float = field(default=0.0)
    # cache misses: one PostgreSQL read (and cache fill) per resource id at a time in this process
    resource_loads: SingleFlight[ResourceRecord | None] = field(default_factory=SingleFlight)

    @functools.cached_property
    def idempotency_claim(self) -> Any:
        """The idempotency claim script (:data:`app.idempotency.CLAIM`), registered once."""
        from app.idempotency import CLAIM

        return self.clients.redis.register_script(CLAIM)

    @property
    def engine(self) -> Engine:
        return self.clients.engine

    @property
    def redis(self) -> redis.Redis:
        return self.clients.redis

    @property
    def resource_cache(self) -> ResourceCache:
        return self.clients.resource_cache

    def redis_available(self) -> bool:
        """False for a few seconds after a Redis failure, so requests skip Redis (reads go to
        PostgreSQL, rate limits and idempotency keys let events through) instead of each paying
        the connection timeout."""
        return time.monotonic() >= self._redis_down_until

    def redis_failed(self, exc: Exception) -> None:
        if self.redis_available():
            log.warning(
                "redis unavailable; skipping it for a few seconds (reads from PostgreSQL, rate limits and "
                "idempotency keys open)",
                extra={"error": str(exc)},
            )
        self._redis_down_until = time.monotonic() + self.redis_retry_after_s


def services() -> Services:
    return current_app.extensions["device_backend"]
