"""Rate limits for tasks (issue 12, item 5), with Dramatiq's names: each limiter on the in-memory
backend and on Redis, and RateLimitExceeded inside an actor meaning "later", never a failure."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from broker import RateLimitExceeded, actor
from broker.rate_limits import BucketRateLimiter, ConcurrentRateLimiter, WindowRateLimiter
from broker.rate_limits.backends import RedisBackend, StubBackend
from tests.helpers import wait_for


@pytest.fixture(params=["stub", pytest.param("redis", marks=pytest.mark.stack)])
def backend(request):
    if request.param == "stub":
        return StubBackend()
    return RedisBackend(client=request.getfixturevalue("redis_client"))


def _key() -> str:
    return f"test-limit-{uuid.uuid4().hex[:8]}"


def test_a_concurrency_limit_of_one_is_a_mutex(backend):
    mutex = ConcurrentRateLimiter(backend, _key(), limit=1)
    with mutex.acquire() as first:
        assert first is True
        with mutex.acquire(raise_on_failure=False) as second:
            assert second is False
        with pytest.raises(RateLimitExceeded), mutex.acquire():
            pass
    with mutex.acquire() as again:  # released on leaving the block
        assert again is True


def test_a_concurrency_limit_holds_across_threads(backend):
    limiter = ConcurrentRateLimiter(backend, _key(), limit=2)
    running, most, lock = [0], [0], threading.Lock()

    def work() -> None:
        for _ in range(20):
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    with lock:
                        running[0] += 1
                        most[0] = max(most[0], running[0])
                    time.sleep(0.002)
                    with lock:
                        running[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


def test_a_window_limit_counts_over_the_window(backend):
    limiter = WindowRateLimiter(backend, _key(), limit=3, window=2)
    results = []
    for _ in range(5):
        with limiter.acquire(raise_on_failure=False) as acquired:
            results.append(acquired)
    assert results == [True, True, True, False, False]


def test_a_bucket_limit_resets_with_the_next_bucket(backend):
    limiter = BucketRateLimiter(backend, _key(), limit=2, bucket=200)
    now = time.time() * 1000
    time.sleep((200 - now % 200) / 1000)  # start at a bucket's beginning: the thing under test is the bucket
    first = []
    for _ in range(3):
        with limiter.acquire(raise_on_failure=False) as acquired:
            first.append(acquired)
    assert first == [True, True, False]
    time.sleep(0.21)
    with limiter.acquire(raise_on_failure=False) as acquired:
        assert acquired


def test_rate_limit_exceeded_in_an_actor_is_tried_later_and_never_dead_lettered(env):
    """Even with max_retries=0: "not now" is not a failure."""
    calls = []

    @actor(broker=env.broker, topic=env.topic, max_retries=0)
    def limited():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RateLimitExceeded("busy")

    # "not now" is waited out like a dependency's outage; on the stub from 100 ms (default 500 ms)
    env.start_worker(**({"dependency_min_backoff_ms": 100} if env.kind == "stub" else {}))
    limited.send()
    wait_for(lambda: len(calls) == 3, timeout=30, message=f"{len(calls)} calls")
    wait_for(lambda: sum(env.committed().values()) == 1, message="committed after it ran")
    assert env.dead_letters() == []
