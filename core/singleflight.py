"""Single-flight: at most one load per key at a time in this process.

When a cached entry expires under load, every request in flight for it misses at once; without
this, each went to PostgreSQL (``docs/performance.md`` has the counts). With it, the first caller
for a key loads and the ones that arrive while it does wait for its result. Under gunicorn's
gevent workers the lock and event below are gevent's (the standard library is patched), so a
waiter yields to other requests.

A waiter gets the result of a load that started before it arrived: it can be older than a write
committed in between by at most one load's duration, as a cache entry can. A waiter that waits
longer than ``timeout`` loads for itself, so a stuck load does not hold the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class _Flight(Generic[V]):
    __slots__ = ("done", "error", "value", "waiters")

    def __init__(self) -> None:
        self.waiters = 0
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[V]):
    """``do(key, load)``: run ``load`` once for the callers that ask for ``key`` concurrently."""

    def __init__(self, timeout: float | None = 10.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[V]] = {}

    def do(self, key: Hashable, load: Callable[[], V]) -> tuple[V, bool]:
        """The value of ``load()`` for ``key`` and whether this caller ran it (False: shared)."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1  # type: ignore[union-attr]
        assert flight is not None
        if not leader:
            if not flight.done.wait(self.timeout):
                return load(), True
            if flight.error is not None:
                raise flight.error
            return flight.value, False  # type: ignore[return-value]
        try:
            flight.value = load()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
        return flight.value, True

    def in_flight(self) -> int:
        """How many keys are being loaded now."""
        with self._lock:
            return len(self._flights)

    def waiters(self, key: Hashable) -> int:
        """How many callers wait for the load of ``key`` in progress (0 if none)."""
        with self._lock:
            flight = self._flights.get(key)
            return flight.waiters if flight is not None else 0
