"""What a rate limiter needs from its store: four atomic counter operations (times in ms)."""

from __future__ import annotations

from collections.abc import Sequence


class RateLimiterBackend:
    """Base class of the backends; every operation is atomic."""

    def add(self, key: str, value: int, ttl: int) -> bool:
        """Set ``key`` to ``value`` for ``ttl`` ms unless it exists; True if it was set."""
        raise NotImplementedError

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        """Add ``amount`` unless the result would exceed ``maximum``; True if it was added."""
        raise NotImplementedError

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        """Subtract ``amount`` unless the result would fall below ``minimum``; True if it was."""
        raise NotImplementedError

    def incr_and_sum(self, key: str, keys: Sequence[str], amount: int, maximum: int, ttl: int) -> bool:
        """Add ``amount`` to ``key`` unless the sum over ``keys`` (``key`` among them) plus
        ``amount`` would exceed ``maximum``; True if it was added."""
        raise NotImplementedError
