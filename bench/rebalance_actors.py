"""The rebalance benchmark's task: records when each message of a key completed.

The Redis list comes from BENCH_LIST (set by bench/rebalance.py)."""

import os
import time

import redis

from broker import actor

_redis = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
LIST = os.environ.get("BENCH_LIST", "bench:rebalance")


@actor(topic=os.environ.get("BENCH_TOPIC", "bench-rebalance"), max_retries=0)
def tick(key: str, work_ms: int = 0) -> None:
    if work_ms:
        time.sleep(work_ms / 1000)  # a task that takes a while (an I/O call)
    _redis.rpush(LIST, f"{key} {time.time():.4f}")
