"""Result backends: Redis for real, an in-memory one for unit tests."""

from broker.results.backends.redis import RedisBackend
from broker.results.backends.stub import StubBackend

__all__ = ["RedisBackend", "StubBackend"]
