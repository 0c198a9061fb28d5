"""Actors for tests that run ``worker.py`` as a real process. The topic comes from TEST_TOPIC.

Each call records ``start`` and ``end`` markers in a Redis list named after the topic, so a test
can tell what ran, what finished and in which order.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time

import redis

from broker import actor

TOPIC = os.environ["TEST_TOPIC"]


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@actor(topic=TOPIC, max_retries=0)
def record(key: str, seq: int, sleep_ms: int = 0) -> None:
    client = _redis()
    client.rpush(f"{TOPIC}:started", f"{key}:{seq}")
    if sleep_ms:
        time.sleep(sleep_ms / 1000)
    client.rpush(f"{TOPIC}:seen", f"{key}:{seq}")


@actor(topic=TOPIC, max_retries=0)
async def record_async(key: str, seq: int, sleep_ms: int = 0) -> None:
    """``record`` as a coroutine: it runs on the process's event loop thread."""
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    _redis().rpush(f"{TOPIC}:seen", f"{key}:{seq}")


@actor(topic=TOPIC, max_retries=0)
def guarded(key: str, seq: int) -> None:
    """Fails while the ``{topic}:broken`` flag is set (a broken downstream), then works."""
    client = _redis()
    if client.exists(f"{TOPIC}:broken"):
        raise RuntimeError("downstream is broken")
    client.rpush(f"{TOPIC}:seen", f"{key}:{seq}")


@actor(topic=TOPIC, max_retries=0)
def exclusive(key: str, seq: int) -> None:
    """Runs only while it holds a cross-process mutex; records any overlap it sees."""
    from broker.rate_limits import ConcurrentRateLimiter
    from broker.rate_limits.backends import RedisBackend

    client = _redis()
    mutex = ConcurrentRateLimiter(RedisBackend(client=client), f"{TOPIC}:mutex", limit=1, ttl=30_000)
    with mutex.acquire():  # RateLimitExceeded: the worker runs the message again later
        if client.incr(f"{TOPIC}:inside") > 1:
            client.set(f"{TOPIC}:overlap", 1)
        time.sleep(0.01)
        client.decr(f"{TOPIC}:inside")
        client.rpush(f"{TOPIC}:seen", f"{key}:{seq}")
