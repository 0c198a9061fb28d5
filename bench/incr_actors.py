"""The no-op benchmark task on our broker: each message INCRs one Redis counter.

Topic and counter come from BENCH_TOPIC and BENCH_COUNTER (set by bench/tasks_section.py)."""

import os

import redis

from broker import actor

_redis = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
COUNTER = os.environ.get("BENCH_COUNTER", "bench:incr")


@actor(topic=os.environ.get("BENCH_TOPIC", "bench-incr"), max_retries=0)
def incr(n: int) -> None:
    _redis.incr(COUNTER)
