"""The rate limiters: concurrency (a distributed semaphore), sliding window, fixed bucket."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from broker.errors import RateLimitExceeded
from broker.rate_limits.backend import RateLimiterBackend


class RateLimiter:
    """Base class: ``with limiter.acquire(): ...`` runs the block only within the limit."""

    def __init__(self, backend: RateLimiterBackend, key: str) -> None:
        self.backend = backend
        self.key = key

    def _acquire(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        """Give back what ``_acquire`` took (only concurrency limits take anything)."""

    @contextmanager
    def acquire(self, *, raise_on_failure: bool = True) -> Iterator[bool]:
        """Take a slot for the block. Without one: raise :class:`RateLimitExceeded`, or with
        ``raise_on_failure=False`` run the block with ``False`` as the value."""
        acquired = self._acquire()
        try:
            if not acquired and raise_on_failure:
                raise RateLimitExceeded(f"rate limit exceeded for key {self.key!r}")
            yield acquired
        finally:
            if acquired:
                self._release()


class ConcurrentRateLimiter(RateLimiter):
    """At most ``limit`` blocks run at once under ``key``, across every process sharing the
    backend (``limit=1``: a distributed mutex). A holder that dies without releasing frees its
    slot after ``ttl`` ms."""

    def __init__(self, backend: RateLimiterBackend, key: str, *, limit: int = 1, ttl: int = 900_000) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        super().__init__(backend, key)
        self.limit, self.ttl = limit, ttl

    def _acquire(self) -> bool:
        return self.backend.add(self.key, 1, ttl=self.ttl) or self.backend.incr(
            self.key, 1, maximum=self.limit, ttl=self.ttl
        )

    def _release(self) -> None:
        self.backend.decr(self.key, 1, minimum=0, ttl=self.ttl)


class WindowRateLimiter(RateLimiter):
    """At most ``limit`` blocks in any ``window`` seconds (a sliding window of one-second
    buckets: no burst at a boundary, one counter per second of the window)."""

    def __init__(self, backend: RateLimiterBackend, key: str, *, limit: int = 1, window: int = 1) -> None:
        if limit < 1 or window < 1:
            raise ValueError("limit and window must be positive")
        super().__init__(backend, key)
        self.limit, self.window = limit, window

    def _acquire(self) -> bool:
        now = int(time.time())
        keys = [f"{self.key}@{now - i}" for i in range(self.window)]
        return self.backend.incr_and_sum(keys[0], keys, 1, maximum=self.limit, ttl=self.window * 1000)


class BucketRateLimiter(RateLimiter):
    """At most ``limit`` blocks per fixed ``bucket`` of milliseconds. Cheap, but a burst of
    ``limit`` at the end of one bucket and another at the start of the next is allowed."""

    def __init__(self, backend: RateLimiterBackend, key: str, *, limit: int = 1, bucket: int = 1000) -> None:
        if limit < 1 or bucket < 1:
            raise ValueError("limit and bucket must be positive")
        super().__init__(backend, key)
        self.limit, self.bucket = limit, bucket

    def _acquire(self) -> bool:
        now = int(time.time() * 1000)
        key = f"{self.key}@{now - now % self.bucket}"
        return self.backend.add(key, 1, ttl=self.bucket) or self.backend.incr(
            key, 1, maximum=self.limit, ttl=self.bucket
        )
