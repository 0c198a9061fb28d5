"""What a rate limiter (and a barrier) needs from its store: atomic operations (times in ms)."""

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

    def add_member(self, key: str, member: str, parties: int, ttl: int) -> bool:
        """Add ``member`` to the set ``key``; True for the member that added the set's
        ``parties``-th distinct member, False for every other: one member completes a barrier,
        even when members arrive twice. The completing member gets True again if it arrives again
        (it may have failed to act on the first answer)."""
        raise NotImplementedError
