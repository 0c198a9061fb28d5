"""A distributed barrier: of ``parties`` members, the last to arrive is told so, exactly once."""

from __future__ import annotations

import time

from broker.rate_limits.backend import RateLimiterBackend

DEFAULT_BARRIER_TTL_MS = 86_400_000  # a day: a group whose members take longer never completes


class Barrier:
    """Two ways to use it.

    Members (what group completion callbacks use): ``Barrier(backend, key, parties)``; each
    member calls :meth:`arrive` with its own id once it is done. The member that brings the
    ``parties``-th distinct member gets True (again, should it arrive again), every other False:
    a member arriving twice (a redelivery) is counted once.

    Dramatiq's way: ``Barrier(backend, key)``, :meth:`create` with the number of parties, then
    each party calls :meth:`wait`; it counts arrivals, so a party that runs twice counts twice.
    """

    def __init__(
        self, backend: RateLimiterBackend, key: str, parties: int | None = None, *, ttl: int = DEFAULT_BARRIER_TTL_MS
    ) -> None:
        if parties is not None and parties < 1:
            raise ValueError("a barrier needs at least one party")
        self.backend = backend
        self.key = key
        self.parties = parties
        self.ttl = ttl

    def arrive(self, member: str) -> bool:
        """Record ``member`` as done; True if this completed the barrier."""
        if self.parties is None:
            raise ValueError("arrive() needs the barrier's parties: Barrier(backend, key, parties)")
        return self.backend.add_member(self.key, member, self.parties, self.ttl)

    def create(self, parties: int) -> bool:
        """Start a barrier of ``parties`` waits; False if one of this key exists already."""
        return self.backend.add(self.key, parties, self.ttl)

    def wait(self, *, block: bool = True, timeout: int | None = None) -> bool:
        """Arrive. The last of the parties gets True at once; the others get False without
        ``block``, else wait (up to ``timeout`` ms) and get True once the last has arrived, False
        if it did not in time."""
        if not self.backend.decr(self.key, 1, 1, self.ttl):  # the count was 1: this is the last
            self.backend.decr(self.key, 1, 0, self.ttl)
            self.backend.incr(self._released, 1, 1, self.ttl)  # the waiters' polls may have made it 0
            return True
        if not block:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while deadline is None or time.monotonic() < deadline:
            if self._is_released():
                return True
            time.sleep(0.002)  # waiting parties wake within a few ms of each other
        return self._is_released()

    @property
    def _released(self) -> str:
        return self.key + "@released"

    def _is_released(self) -> bool:
        # incr by 0 up to 0 succeeds while the release key is absent (0), fails once it is 1
        return not self.backend.incr(self._released, 0, 0, self.ttl)
