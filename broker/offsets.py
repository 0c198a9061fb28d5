"""Offset bookkeeping for the worker: which fetched offsets are finished, what may be committed,
and how partitions are given up in a rebalance.

The commit rule: a partition's committed offset (the *next* offset to read) never passes a
record that is still queued, running, waiting for a retry, or whose dead letter has not been
acknowledged. Records finish out of order (other keys run in parallel), so a finished offset
behind an unfinished one waits in ``done`` until everything before it has finished too.

Everything here is guarded by the worker's lock; the :class:`Revocation` takes it itself.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from broker.consumer import Record, TopicPartition

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PartitionState:
    """Bookkeeping for one assigned partition."""

    tp: TopicPartition
    pending: deque[int] = field(default_factory=deque)  # fetched offsets, in order, not yet committable
    done: set[int] = field(default_factory=set)  # finished offsets still behind an unfinished one
    next_commit: int | None = None  # the offset a commit would store (last contiguous done + 1)
    committed: int | None = None
    keys: dict[bytes, deque[Record]] = field(default_factory=dict)  # busy keys -> records waiting behind them
    buffered: int = 0  # fetched and not finished
    in_flight: int = 0
    paused: bool = False
    revoked: bool = False

    def track(self, offset: int) -> None:
        """A record was fetched and handed to the worker."""
        self.pending.append(offset)
        self.buffered += 1

    def finish(self, offset: int) -> None:
        """The record succeeded or its dead letter was acknowledged: it may be committed past."""
        self.buffered -= 1
        self.done.add(offset)
        while self.pending and self.pending[0] in self.done:
            first = self.pending.popleft()
            self.done.discard(first)
            self.next_commit = first + 1


def committable(states: Iterable[PartitionState]) -> dict[TopicPartition, int]:
    """The offsets to commit now: each partition's finished prefix, where it moved since the last commit."""
    return {s.tp: s.next_commit for s in states if s.next_commit is not None and s.next_commit != s.committed}


class Revocation:
    """Partitions being given up in a rebalance.

    The worker stops starting work on them; the consumer then waits (without blocking its
    heartbeats) while :meth:`busy`, commits :meth:`offsets`, moves its fetch positions back to
    :meth:`resume_positions` (a partition that stays with this member must not skip records the
    worker dropped) and calls :meth:`done` with what it actually committed.
    """

    def __init__(
        self,
        changed: threading.Condition,
        assigned: dict[TopicPartition, PartitionState],
        states: list[PartitionState],
    ) -> None:
        self._changed = changed  # the worker's condition (and lock)
        self._assigned = assigned  # the worker's assigned partitions, which done() removes them from
        self._states = states

    def busy(self) -> bool:
        """True while messages of the revoked partitions are still running."""
        with self._changed:
            return any(s.in_flight for s in self._states)

    def offsets(self) -> dict[TopicPartition, int]:
        """What to commit for the revoked partitions (next offsets to read)."""
        with self._changed:
            return committable(self._states)

    def resume_positions(self) -> dict[TopicPartition, int]:
        """Where to fetch from if a partition comes back to this member: the first offset that is
        not finished. Records fetched but dropped by the revocation are read again, not skipped."""
        with self._changed:
            positions = {}
            for s in self._states:
                if s.pending:
                    positions[s.tp] = s.pending[0]
                elif s.next_commit is not None:
                    positions[s.tp] = s.next_commit
            return positions

    def done(self, committed: dict[TopicPartition, int]) -> None:
        """Forget the partitions; ``committed`` is what was actually committed."""
        with self._changed:
            for state in self._states:
                if state.tp in committed:
                    state.committed = committed[state.tp]
                self._assigned.pop(state.tp, None)
            self._changed.notify_all()
        if self._states:
            log.info("partitions revoked", extra={"partitions": sorted(f"{s.tp[0]}-{s.tp[1]}" for s in self._states)})
