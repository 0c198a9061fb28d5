"""The scaling simulator's actor (``tests/scaling/simulator.py``): ~20 ms of I/O per event.

It records how often each event ran (a hash: duplicates show as counts above 1) and when it
finished beside when it was sent (a list), in Redis under keys named after the topic.
"""

from __future__ import annotations

import functools
import os
import time

import redis

from broker import actor

TOPIC = os.environ["SCALE_TOPIC"]


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@actor(topic=TOPIC, max_retries=3)
def io_event(seq: int, sent_ms: int) -> None:
    time.sleep(0.02)  # the I/O an event waits for (a call to another service, say)
    now_ms = int(time.time() * 1000)
    pipe = _redis().pipeline(transaction=False)
    pipe.hincrby(f"{TOPIC}:runs", str(seq), 1)
    pipe.rpush(f"{TOPIC}:done", f"{now_ms},{now_ms - sent_ms}")
    pipe.execute()
