"""Celery + Redis: ``celery -A bench.peers.celery_incr worker -c 2``."""

import os

import redis
from celery import Celery

URL = os.environ.get("BENCH_PEER_REDIS_URL", "redis://127.0.0.1:6379/3")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:incr")
app = Celery("bench", broker=URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
_redis = redis.Redis.from_url(URL)


@app.task(name="incr")
def incr(n: int) -> None:
    _redis.incr(COUNTER)
