"""Actors for the toolbox's process tests (issue 12): ``worker.py`` imports this module.

``TEST_TOPIC`` and ``TEST_TOPIC_B`` name two topics, so two processes, each consuming one, must
hand a pipeline back and forth. Each call records ``name:pid:args`` in the Redis list
``<TEST_TOPIC>:calls``.
"""

from __future__ import annotations

import functools
import json
import os

import redis

from broker import actor

TOPIC = os.environ["TEST_TOPIC"]
TOPIC_B = os.environ.get("TEST_TOPIC_B", TOPIC)
PERIODIC = os.environ.get("TEST_PERIODIC")  # a cron expression for `tick`, when a test schedules


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def _record(name: str, *args: object) -> None:
    _redis().rpush(f"{TOPIC}:calls", json.dumps([name, os.getpid(), list(args)]))


@actor(topic=TOPIC, max_retries=0)
def double(x: int) -> int:
    _record("double", x)
    return 2 * x


@actor(topic=TOPIC_B, max_retries=0)
def add_one(x: int) -> int:
    _record("add_one", x)
    return x + 1


@actor(topic=TOPIC, max_retries=0)
def note(label: str) -> None:
    _record("note", label)


if PERIODIC:

    @actor(topic=TOPIC, periodic=PERIODIC)
    def tick() -> None:
        _record("tick")
