"""Dramatiq + Redis: ``dramatiq -p 2 -t 8 bench.peers.dramatiq_incr``."""

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ.get("BENCH_PEER_REDIS_URL", "redis://127.0.0.1:6379/2")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:incr")
dramatiq.set_broker(RedisBroker(url=URL))
_redis = redis.Redis.from_url(URL)


@dramatiq.actor(max_retries=0)
def incr(n: int) -> None:
    _redis.incr(COUNTER)
