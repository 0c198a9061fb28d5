"""Rate limiter backends: Redis for real, an in-memory one for unit tests."""

from broker.rate_limits.backends.redis import RedisBackend
from broker.rate_limits.backends.stub import StubBackend

__all__ = ["RedisBackend", "StubBackend"]
