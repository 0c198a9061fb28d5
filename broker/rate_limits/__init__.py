"""Rate limits for tasks, with Dramatiq's names and semantics.

    from broker.rate_limits import ConcurrentRateLimiter, RateLimitExceeded
    from broker.rate_limits.backends import RedisBackend

    backend = RedisBackend(url="redis://127.0.0.1:6379/0")
    MUTEX = ConcurrentRateLimiter(backend, "exports-mutex", limit=1)

    @actor
    def export(n):
        with MUTEX.acquire():     # raises RateLimitExceeded if another process holds it
            ...

``RateLimitExceeded`` raised inside an actor means "not now": the worker tries the same message
again later with backoff, and it never counts as an attempt nor leads to the dead-letter topic
(in Dramatiq it counts as a failure). ``acquire(raise_on_failure=False)`` yields a boolean instead.
"""

from broker.errors import RateLimitExceeded
from broker.rate_limits.backend import RateLimiterBackend
from broker.rate_limits.barrier import Barrier
from broker.rate_limits.limiters import BucketRateLimiter, ConcurrentRateLimiter, RateLimiter, WindowRateLimiter

__all__ = [
    "Barrier",
    "BucketRateLimiter",
    "ConcurrentRateLimiter",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterBackend",
    "WindowRateLimiter",
]
