"""A distributed barrier: of ``parties`` members, the last to arrive is told so, exactly once."""

from __future__ import annotations

from broker.rate_limits.backend import RateLimiterBackend

DEFAULT_BARRIER_TTL_MS = 86_400_000  # a day: a group whose members take longer never completes


class Barrier:
    """``Barrier(backend, key, parties)``; each member calls :meth:`arrive` with its own id once it
    is done. The member that brings the ``parties``-th distinct member gets True (again, should it
    arrive again), every other False: a member arriving twice (a redelivery) is counted once. Group completion callbacks
    (:class:`broker.composition.GroupCallbacks`) use it.

    Dramatiq's ``Barrier`` counts arrivals (``create(parties)``, then ``wait()``); this one counts
    distinct members, because on Kafka a member can run twice.
    """

    def __init__(
        self, backend: RateLimiterBackend, key: str, parties: int, *, ttl: int = DEFAULT_BARRIER_TTL_MS
    ) -> None:
        if parties < 1:
            raise ValueError("a barrier needs at least one party")
        self.backend = backend
        self.key = key
        self.parties = parties
        self.ttl = ttl

    def arrive(self, member: str) -> bool:
        """Record ``member`` as done; True if this completed the barrier."""
        return self.backend.add_member(self.key, member, self.parties, self.ttl)
