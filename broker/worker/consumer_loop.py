"""The consumer thread: fetches records, hands them out by key, commits offsets, and drains.

It is the one thread that touches the broker's consumer (Kafka consumers are not thread-safe),
so everything the group sees of this member goes through here: polls (which also keep the
membership alive during long work or backoff), pauses of partitions whose buffer is full,
commits of each partition's finished prefix, and the last commit when the worker stops.

A record is handed to the worker threads only when it is the first of its key not finished: the
others wait behind it in their partition's ``keys`` (the runner hands the next one out when its
predecessor is done), which is what keeps order per key while other keys run in parallel.

Retries are handed out by a thread of their own (:meth:`ConsumerLoop.run_retries`): this thread
spends most of its time inside ``poll``, so a retry due now would otherwise wait for the poll to
return, up to ``poll_timeout_ms``.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from typing import Protocol

from broker.broker import Broker
from broker.consumer import Consumer, Record
from broker.errors import BrokerUnavailable
from broker.offsets import committable, decode_done
from broker.worker.state import STOP, Work, WorkerState, emit_logged

log = logging.getLogger("broker.worker")  # the package's logger (the name its records always had)


class LoopSettings(Protocol):
    """The worker's settings this loop reads (the :class:`~broker.worker.Worker` itself), on each
    use: :meth:`Worker.stop` may change ``shutdown_timeout`` before the drain starts."""

    topics: list[str] | None  # None: follow the broker's declared topics
    worker_threads: int  # how many worker threads to stop when this thread ends
    commit_interval: float  # seconds between commits of finished offsets
    max_poll_records: int
    poll_timeout_ms: int
    max_buffered: int  # fetched-but-unfinished records above which a partition is paused
    shutdown_timeout: float  # seconds a drain lets running messages finish


class ConsumerLoop:
    """The consumer thread's loop (:meth:`run`) and the retry thread's (:meth:`run_retries`).

    Parameters:
      broker, shared: the worker's broker and shared state.
      consumer: the group member :meth:`Broker.consume` returned.
      settings: the worker's settings.
      subscribed: the topics subscribed to at start, at the broker's ``declarations`` count.
    """

    def __init__(
        self,
        broker: Broker,
        shared: WorkerState,
        consumer: Consumer,
        settings: LoopSettings,
        *,
        subscribed: list[str],
        declarations: int,
    ) -> None:
        self.broker = broker
        self.shared = shared
        self.consumer = consumer
        self.settings = settings
        self.subscribed = subscribed
        self.declarations = declarations

    def run(self) -> None:
        """Poll, hand out and commit until a stop is requested; then drain. If anything fails here
        the worker stops (the process must not keep running without a consumer)."""
        shared = self.shared
        last_commit = time.monotonic()
        emit_logged(self.broker, "after", "consumer_thread_boot", threading.current_thread())
        try:
            while not shared.stop_requested.is_set():
                self._follow_declared_topics()
                # retries do not wait for a poll: the retry thread releases them
                records = self._poll(self.settings.poll_timeout_ms)
                if records:
                    self._load_skips(records)
                with shared.changed:
                    self._dispatch(records)
                    self._apply_backpressure()
                if time.monotonic() - last_commit >= self.settings.commit_interval:
                    self._commit()
                    last_commit = time.monotonic()
            self._drain()
        except BaseException as exc:
            log.exception("consumer thread failed")
            shared.failure = exc
            self._abandon()
        finally:
            emit_logged(self.broker, "before", "consumer_thread_shutdown", threading.current_thread())
            for _ in range(self.settings.worker_threads):
                shared.ready.put(STOP, priority=float("-inf"))  # before any work: none starts now
            with shared.changed:
                shared.stopped.set()
                shared.changed.notify_all()  # the retry thread ends too

    def run_retries(self) -> None:
        """Hand each retry to the worker threads when it is due, until the consumer thread ends.
        Scheduling a retry notifies the condition this thread sleeps on."""
        shared = self.shared
        with shared.changed:
            while not shared.stopped.is_set():
                self._release_due_retries()
                timeout = shared.delayed[0][0] - time.monotonic() if shared.delayed else None
                shared.changed.wait(timeout)

    def _release_due_retries(self) -> None:
        shared, now = self.shared, time.monotonic()
        while shared.delayed and shared.delayed[0][0] <= now:
            _, _, work = heapq.heappop(shared.delayed)
            if not work.state.revoked:
                shared.make_ready(work)

    def _follow_declared_topics(self) -> None:
        """Without ``topics=``, subscribe to a topic an actor declared after the worker started."""
        if self.settings.topics or self.broker.declarations == self.declarations:
            return
        self.declarations = self.broker.declarations
        topics = sorted(self.broker.get_declared_topics())
        subscribe = getattr(self.consumer, "subscribe", None)
        if topics != self.subscribed and subscribe is not None:
            subscribe(topics)
            self.subscribed = topics
            log.info("subscription changed", extra={"topics": topics})

    def _poll(self, timeout_ms: int) -> list[Record]:
        try:
            return self.consumer.poll(timeout_ms, self.settings.max_poll_records)
        except BrokerUnavailable as exc:
            log.warning("poll failed; retrying", extra={"error": str(exc)})
            time.sleep(min(1.0, timeout_ms / 1000))
            return []

    def _load_skips(self, records: list[Record]) -> None:
        """Read, once per assignment, which records of these partitions a previous owner already
        finished (the commit's metadata, see broker.offsets), before any of them is dispatched.
        Called without the lock: it may wait for the broker."""
        shared = self.shared
        with shared.lock:
            unread = {r.tp for r in records if (s := shared.partitions.get(r.tp)) is not None and s.skip is None}
        if not unread:
            return
        try:
            commits = self.consumer.committed(unread)
        except BrokerUnavailable as exc:  # not knowing only risks running a finished record again
            log.warning("could not read the finished-ahead offsets; they may run again", extra={"error": str(exc)})
            commits = {}
        with shared.lock:
            for tp in unread:
                state = shared.partitions.get(tp)
                if state is not None and state.skip is None:
                    commit = commits.get(tp)
                    state.skip = decode_done(commit.offset, commit.metadata) if commit is not None else set()
                    if commit is not None:
                        state.committed, state.committed_metadata = commit

    def _dispatch(self, records: list[Record]) -> None:
        """Track each record and hand out those first of their key (under the lock)."""
        shared = self.shared
        for record in records:
            state = shared.partitions.get(record.tp)
            if state is None or state.revoked:
                continue  # fetched just before a revocation: the next owner reads it again
            state.track(record.offset)
            if state.skip and record.offset in state.skip:
                state.skip.discard(record.offset)
                state.finish(record.offset)  # a previous owner ran it: its commit said so
                continue
            key = record.key
            if key is None:
                shared.make_ready(Work(state, record))
            elif key in state.keys:
                state.keys[key].append(record)
            else:
                state.keys[key] = deque()
                shared.make_ready(Work(state, record))

    def _apply_backpressure(self) -> None:
        """Pause a partition whose buffer is full, resume it at half (under the lock): a paused
        partition is still polled, so the member stays in its group."""
        for state in self.shared.partitions.values():
            if not state.paused and state.buffered >= self.settings.max_buffered:
                self.consumer.pause([state.tp])
                state.paused = True
            elif state.paused and state.buffered <= self.settings.max_buffered // 2:
                self.consumer.resume([state.tp])
                state.paused = False

    def _commit(self) -> None:
        """Commit every assigned partition's finished prefix (revoked ones commit through Revocation)."""
        shared = self.shared
        with shared.lock:
            chosen = list(shared.partitions.values())
            offsets = committable(chosen)
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except BrokerUnavailable as exc:
            log.warning("offset commit failed; will retry", extra={"error": str(exc)})
            return
        with shared.changed:
            for s in chosen:
                if s.tp in offsets:
                    s.committed, s.committed_metadata = offsets[s.tp]
            shared.changed.notify_all()

    def _drain(self) -> None:
        """Stop fetching, let running messages finish, commit, leave the group."""
        shared = self.shared
        with shared.changed:
            shared.draining = True
            shared.delayed.clear()  # not committed: redelivered to the next owner
            paused = [s.tp for s in shared.partitions.values()]
        self.consumer.pause(paused)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while True:
            with shared.lock:
                busy = shared.in_flight
            if not busy:
                break
            if time.monotonic() >= deadline:
                log.warning("shutdown timeout: %d message(s) still running are left uncommitted", busy)
                break
            self._poll(50)  # paused: returns nothing, keeps the membership alive
        self._commit()
        self.consumer.close()
        log.info("worker stopped")

    def _abandon(self) -> None:
        """After a failure of this thread: start nothing more, keep nothing for later, and leave."""
        with self.shared.lock:
            self.shared.draining = True
            self.shared.delayed.clear()
        try:
            self.consumer.close()
        except Exception:
            log.exception("closing the consumer failed")
