"""Offset bookkeeping for the worker: which fetched offsets are finished, what may be committed,
and how partitions are given up in a rebalance.

The commit rule: a partition's committed offset (the *next* offset to read) never passes a
record that is still queued, running, waiting for a retry, or whose dead letter has not been
acknowledged. Records finish out of order (other keys run in parallel), so a finished offset
behind an unfinished one waits in ``done`` until everything before it has finished too.

So that a finished record is not run again by the partition's next owner (a worker joining or
leaving, a clean start of several processes), each commit also carries, in the commit's
metadata, the finished offsets ahead of the committed one (as Confluent's parallel consumer
does); the next owner reads them at assignment and skips those records. A map too long for the
broker's metadata limit keeps its lowest offsets: the rest may run twice, never not at all.

Everything here is guarded by the worker's lock; the :class:`Revocation` takes it itself.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from broker.consumer import Commit as Commit  # its home was here: still importable from here
from broker.consumer import Record, TopicPartition

log = logging.getLogger(__name__)

METADATA_VERSION = "done1:"
MAX_METADATA_CHARS = 4000  # Kafka's offset.metadata.max.bytes defaults to 4096


def encode_done(base: int, done: Iterable[int]) -> str:
    """``done`` offsets (all above ``base``) as ranges relative to ``base``: ``done1:1-3,5,9``."""
    ranges: list[str] = []
    size = len(METADATA_VERSION)
    run: list[int] = []
    for offset in sorted(done):
        if run and offset == run[-1] + 1:
            run[-1] = offset
            continue
        if run:
            text = _range(base, run)
            if size + len(text) + 1 > MAX_METADATA_CHARS:
                run = []
                break
            ranges.append(text)
            size += len(text) + 1
        run = [offset, offset]
    if run and size + len(_range(base, run)) <= MAX_METADATA_CHARS:
        ranges.append(_range(base, run))
    return METADATA_VERSION + ",".join(ranges) if ranges else ""


def _range(base: int, run: list[int]) -> str:
    first, last = run[0] - base, run[-1] - base
    return str(first) if first == last else f"{first}-{last}"


def decode_done(base: int, metadata: str | None) -> set[int]:
    """The finished offsets a commit's metadata names (empty for any other metadata)."""
    if not metadata or not metadata.startswith(METADATA_VERSION):
        return set()
    done: set[int] = set()
    try:
        for part in metadata[len(METADATA_VERSION) :].split(","):
            first, _, last = part.partition("-")
            done.update(range(base + int(first), base + int(last or first) + 1))
    except ValueError:
        log.warning("ignoring unreadable commit metadata", extra={"metadata": metadata[:100]})
        return set()
    return done


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
    skip: set[int] | None = None  # finished by a previous owner (commit metadata); None: not read yet
    committed_metadata: str = ""

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

    def commit(self) -> Commit | None:
        """The finished prefix and the finished offsets beyond it; None before anything is known."""
        if self.next_commit is not None:
            base = self.next_commit
        elif self.pending:
            base = self.pending[0]  # nothing finished in order yet: where this owner started
        else:
            return None
        return Commit(base, encode_done(base, self.done) if self.done else "")


def committable(states: Iterable[PartitionState]) -> dict[TopicPartition, Commit]:
    """What to commit now: each partition whose finished prefix or finished-ahead map changed
    since its last commit."""
    out = {}
    for state in states:
        commit = state.commit()
        if commit is not None and (commit.offset, commit.metadata) != (state.committed, state.committed_metadata):
            out[state.tp] = commit
    return out


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

    def offsets(self) -> dict[TopicPartition, Commit]:
        """What to commit for the revoked partitions (next offsets to read, finished ones beyond)."""
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

    def done(self, committed: dict[TopicPartition, Commit]) -> None:
        """Forget the partitions; ``committed`` is what was actually committed."""
        with self._changed:
            for state in self._states:
                if state.tp in committed:
                    state.committed, state.committed_metadata = committed[state.tp]
                self._assigned.pop(state.tp, None)
            self._changed.notify_all()
        if self._states:
            log.info("partitions revoked", extra={"partitions": sorted(f"{s.tp[0]}-{s.tp[1]}" for s in self._states)})
