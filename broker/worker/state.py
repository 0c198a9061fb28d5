"""What the worker's threads share, in one object, and the steps on it that more than one does.

Three kinds of thread meet here: the consumer thread (fetches records, hands them out, commits,
follows rebalances), the retry thread (hands retries out when they are due) and the worker
threads (run records, then finish them or schedule them again). Every container of
:class:`WorkerState` is read and written under its one ``lock``; ``changed``, a condition on that
lock, is notified whenever work finishes or moves, which wakes ``Worker.join``, a revocation
waiting for its partitions to go quiet, and the retry thread. Keeping them in one place (rather
than as attributes of the worker that each piece reaches into) makes what is shared, and what
guards it, visible.

A :class:`Work` is one record on its way through: queued in :class:`ReadyQueue`, running,
waiting in ``delayed`` for a retry, or waiting behind its key in its partition's ``keys``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

from broker.broker import Broker
from broker.consumer import Record, TopicPartition
from broker.message import Message
from broker.offsets import PartitionState
from broker.proxy import MessageProxy
from broker.worker.outcome import Abandoned, Done, Outcome, RetryIn

log = logging.getLogger("broker.worker")  # the package's logger (the name its records always had)


class Stop:
    """Queued once per worker thread, ahead of any work, to end it."""


STOP = Stop()


@dataclass(eq=False)
class Work:
    """One record handed out, and its delivery once decoded (kept across its retries)."""

    state: PartitionState
    record: Record
    proxy: MessageProxy | None = None

    def deliver(self, message: Message) -> MessageProxy:
        """Start the delivery of ``message``, decoded from this record. A retry sent as a delayed
        message (``ordered=False``) carries how many attempts came before it in its ``retries``
        option."""
        retries = message.options.get("retries", 0)
        self.proxy = MessageProxy(message, self.record, attempt=retries + 1 if isinstance(retries, int) else 1)
        return self.proxy


Entry: TypeAlias = tuple[float, int, Work | Stop]


class ReadyQueue:
    """The records the worker threads may start: entries ``(priority, arrival, item)``, lowest first."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[Entry] = queue.PriorityQueue()
        self._arrivals = itertools.count()

    def put(self, item: Work | Stop, *, priority: float = 0) -> None:
        self._queue.put((priority, next(self._arrivals), item))

    def take(self) -> Entry:
        return self._queue.get()

    def take_nowait(self) -> Entry:
        """The first entry; raises :class:`queue.Empty` if there is none."""
        return self._queue.get_nowait()

    def give_back(self, entry: Entry) -> None:
        """Return an entry taken, in its place (its arrival number kept)."""
        self._queue.put(entry)


class WorkerState:
    """The lock and the containers the worker's threads share (see the module's docstring)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.partitions: dict[TopicPartition, PartitionState] = {}  # assigned to this member
        self.ready = ReadyQueue()
        self.delayed: list[tuple[float, int, Work]] = []  # a heap of (due, sequence, work): retries
        self._sequence = itertools.count()
        self.in_flight = 0  # records running now
        self.draining = False  # stopping: nothing new starts
        self.stop_requested = threading.Event()
        self.stopped = threading.Event()  # the consumer thread has ended
        self.unpaused = threading.Event()
        self.unpaused.set()
        self.failure: BaseException | None = None  # why the worker stopped by itself, if it did

    def idle(self) -> bool:
        """Nothing running, waiting or uncommitted (under the lock)."""
        return (
            self.in_flight == 0
            and not self.delayed
            and all(s.buffered == 0 and s.committed == s.next_commit for s in self.partitions.values())
        )

    def make_ready(self, work: Work) -> None:
        """Queue a record for the worker threads: lowest actor ``priority`` first (Dramatiq's order
        within a worker process), then in arrival order. Only when some actor has a priority is
        the record decoded here, to learn its actor."""
        priority = 0
        if self.broker.prioritised:
            if work.proxy is None:
                try:
                    message = Message.decode(work.record.value)
                    self.broker.get_actor(message.actor_name)
                    work.deliver(message)
                except Exception:  # on the consumer thread nothing may escape: the runner dead-letters it
                    work.proxy = None
            if work.proxy is not None:
                priority = getattr(self.broker.actors.get(work.proxy.actor_name), "priority", 0)
        self.ready.put(work, priority=priority)

    def begin(self, works: list[Work]) -> list[Work]:
        """Count ``works`` as running, and return them; none while draining, and none of a revoked
        partition (not started, not committed: redelivered later)."""
        with self.lock:
            if self.draining:
                return []
            started = [w for w in works if not w.state.revoked]
            for work in started:
                work.state.in_flight += 1
                self.in_flight += 1
        return started

    def release(self, work: Work) -> None:
        """``work`` is no longer running (under the lock); what becomes of it is the caller's."""
        work.state.in_flight -= 1
        self.in_flight -= 1

    def settle(self, work: Work, outcome: Outcome) -> Work | None:
        """Record the outcome of a run of ``work`` (under the lock; the caller notifies). Returns
        the next record of the same key when ``work`` is done and that one may start now."""
        self.release(work)
        match outcome:
            case Abandoned():
                return None
            case RetryIn(ms):
                heapq.heappush(self.delayed, (time.monotonic() + ms / 1000, next(self._sequence), work))
                return None
            case Done():
                work.state.finish(work.record.offset)
                return self.next_for_key(work.state, work.record.key)

    def next_for_key(self, state: PartitionState, key: bytes | None) -> Work | None:
        """The record waiting behind a finished one of ``key``, if it may start now (under the
        lock); the key is no longer busy when none waits."""
        if key is None:
            return None
        waiting = state.keys.get(key)
        if waiting:
            if state.revoked or self.draining:
                return None
            return Work(state, waiting.popleft())
        state.keys.pop(key, None)
        return None


def emit_logged(broker: Broker, when: str, hook: str, arg: Any) -> None:
    """Emit a hook whose failure must change nothing (an outcome already decided, a thread's boot
    or shutdown): a failing middleware is logged, and the caller goes on."""
    emit = broker.emit_after if when == "after" else broker.emit_before
    try:
        emit(hook, arg)
    except Exception:
        log.exception("middleware hook %s_%s failed", when, hook)
