"""Per-process resources for tasks (engine, cache), built once by the entry point (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import Engine

from core.cache import ResourceCache
from core.db import make_engine
from core.settings import Settings


@dataclass
class TaskResources:
    settings: Settings
    engine: Engine
    cache: ResourceCache


_resources: TaskResources | None = None


def configure(settings: Settings) -> TaskResources:
    """Create the engine and Redis client for this process (call after any fork)."""
    global _resources
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    _resources = TaskResources(settings, make_engine(settings), ResourceCache(client, settings.cache_ttl_seconds))
    return _resources


def resources() -> TaskResources:
    if _resources is None:
        raise RuntimeError("core.runtime.configure(settings) was not called in this process")
    return _resources
