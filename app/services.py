"""Per-process resources of the API: DB engine, Redis client and resource cache, the task broker.

Built by ``create_app`` (in each gunicorn worker, after fork); reached via :func:`services`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis
from flask import current_app
from sqlalchemy import Engine

from broker import Broker
from core.cache import ResourceCache

log = logging.getLogger(__name__)


@dataclass
class Services:
    engine: Engine
    redis: redis.Redis
    resource_cache: ResourceCache
    broker: Broker
    redis_retry_after_s: float = 5.0
    _redis_down_until: float = field(default=0.0)

    def redis_available(self) -> bool:
        """False for a few seconds after a Redis failure, so reads go straight to PostgreSQL
        instead of each paying the connection timeout."""
        return time.monotonic() >= self._redis_down_until

    def redis_failed(self, exc: Exception) -> None:
        if self.redis_available():
            log.warning("redis unavailable; serving from PostgreSQL", extra={"error": str(exc)})
        self._redis_down_until = time.monotonic() + self.redis_retry_after_s


def services() -> Services:
    return current_app.extensions["device_backend"]
