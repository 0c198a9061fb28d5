"""An in-memory backend for unit tests (one process; expiry by the monotonic clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from broker.rate_limits.backend import RateLimiterBackend


class StubBackend(RateLimiterBackend):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        self._sets: dict[str, tuple[set[str], float]] = {}  # key -> (members, expires at)
        self._completed_by: dict[str, str] = {}

    def _get(self, key: str) -> int | None:
        value, expires = self._values.get(key, (0, 0.0))
        return value if time.monotonic() < expires else None

    def _put(self, key: str, value: int, ttl: int) -> bool:
        self._values[key] = (value, time.monotonic() + ttl / 1000)
        return True

    def add(self, key: str, value: int, ttl: int) -> bool:
        with self._lock:
            return self._get(key) is None and self._put(key, value, ttl)

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        with self._lock:
            value = (self._get(key) or 0) + amount
            return value <= maximum and self._put(key, value, ttl)

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        with self._lock:
            value = (self._get(key) or 0) - amount
            return value >= minimum and self._put(key, value, ttl)

    def incr_and_sum(self, key: str, keys: Sequence[str], amount: int, maximum: int, ttl: int) -> bool:
        with self._lock:
            total = amount + sum(self._get(k) or 0 for k in keys)
            return total <= maximum and self._put(key, (self._get(key) or 0) + amount, ttl)

    def add_member(self, key: str, member: str, parties: int, ttl: int) -> bool:
        with self._lock:
            members, expires = self._sets.get(key, (set(), 0.0))
            if time.monotonic() >= expires:
                members = set()
            added = member not in members
            members.add(member)
            self._sets[key] = (members, time.monotonic() + ttl / 1000)
            if added and len(members) == parties:
                self._completed_by[key] = member
                return True
            return not added and self._completed_by.get(key) == member
