"""The worker: consumes the actors' topics in a consumer group and runs the actors in threads.

One consumer thread owns the broker's consumer (Kafka consumers are not thread-safe): it polls,
hands records to worker threads, schedules retries and commits. Worker threads run actors.

Guarantees:

* **Order per key.** Records with the same key run one at a time, in offset order, including
  their retries; records with other keys (or other partitions) run in parallel, so one
  message's backoff stalls only its own key.
* **Commit discipline.** A partition's committed offset never passes a record that is still
  queued, running, waiting for a retry, or whose dead letter has not been acknowledged.
  Commits are batched (every ``commit_interval_ms`` and on revocation/shutdown).
* **No record stops the worker.** A record that is not a message (no value, not JSON, another
  format version, malformed fields) or names an unknown actor is dead-lettered at once; a
  failure of the worker itself or of a middleware on a record dead-letters that record
  (reason ``worker_error``). The ``dlq.reason`` header says which.
* **A dependency outage is not poison.** When a failure is a dependency's (PostgreSQL, Redis,
  Kafka down or timing out: :mod:`broker.transient`), the record is tried again in place, in
  order, with capped, jittered exponential backoff, for as long as it takes; it never counts
  toward ``max_retries`` and never reaches the dead-letter topic. The member stays in its group.
* **Liveness.** The consumer thread keeps polling during long work and backoff (partitions
  whose buffer is full are paused, not starved), so the member never times out of its group.
* **Shutdown.** :meth:`stop` stops fetching, lets running messages finish within
  ``shutdown_timeout_ms``, commits what is done and leaves the group. Work that did not start
  is left uncommitted and is redelivered, to this group's next owner of the partition.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker import transient
from broker.actor import Call
from broker.broker import Broker
from broker.consumer import Consumer, Record, TopicPartition
from broker.dead_letters import REASON_FAILED, REASON_UNDECODABLE, REASON_UNKNOWN_ACTOR, REASON_WORKER_ERROR
from broker.delay_forwarder import DelayForwarder
from broker.delays import now_ms
from broker.errors import ActorNotFound, BrokerUnavailable, DecodeError, Interrupt
from broker.message import Message
from broker.middleware.middleware import SkipMessage
from broker.offsets import PartitionState, Revocation, committable, decode_done
from broker.proxy import MessageProxy

log = logging.getLogger(__name__)

DEFAULT_GROUP = "workers"  # applications pass their own
# The default of ``max_buffered_per_partition``, under Dramatiq's name for its prefetch (read when
# a worker is built, so patching it changes the workers built afterwards, as in Dramatiq).
QUEUE_PREFETCH = 2000
_STOP = object()  # sentinel that ends a worker thread
_ABANDONED = object()  # outcome of a delivery that could not be finished


@dataclass(eq=False)
class _Work:
    state: PartitionState
    record: Record
    proxy: MessageProxy | None = None


class Worker:
    """Runs the actors declared on ``broker``.

    Parameters:
      broker: a :class:`~broker.broker.Broker` (Kafka or stub).
      topics: topics to consume; default: the topics of the broker's actors.
      group_id: the consumer group (default ``workers``).
      worker_threads: how many actors may run at once in this process.
      commit_interval_ms: how often finished offsets are committed.
      max_buffered_per_partition: fetched-but-unfinished records above which a partition is paused
        (default :data:`QUEUE_PREFETCH`, 2000).
      shutdown_timeout_ms: how long :meth:`stop` lets running messages finish.
      dependency_min_backoff_ms, dependency_max_backoff_ms: the wait before trying a message again
        after a dependency failed under it (doubling from the first, capped at the second, jittered).
      forward_delays: also run a :class:`~broker.delay_forwarder.DelayForwarder`, which moves delayed
        messages to their topics when due (when the broker has delay topics).
      instance_id: a stable identity for this member (Kafka static membership): restarted with the
        same id within the session timeout, it gets its partitions back without a rebalance.
      worker_timeout: Dramatiq's name for ``poll_timeout_ms``.

    Without ``topics`` the worker follows the broker's declared topics: an actor declared on a
    new topic after the worker started is consumed too (the group's subscription is changed).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        topics: Iterable[str] | None = None,
        group_id: str = DEFAULT_GROUP,
        worker_threads: int = 8,
        commit_interval_ms: int = 200,
        max_poll_records: int = 500,
        max_buffered_per_partition: int | None = None,
        shutdown_timeout_ms: int = 30000,
        poll_timeout_ms: int = 100,
        dependency_min_backoff_ms: int = transient.DEFAULT_MIN_BACKOFF_MS,
        dependency_max_backoff_ms: int = transient.DEFAULT_MAX_BACKOFF_MS,
        forward_delays: bool = True,
        instance_id: str | None = None,
        worker_timeout: int | None = None,
    ) -> None:
        self.broker = broker
        self.instance_id = instance_id
        self.topics = sorted(topics) if topics else None
        self.group_id = group_id
        self.worker_threads = worker_threads
        self.commit_interval = commit_interval_ms / 1000
        self.max_poll_records = max_poll_records
        self.max_buffered = QUEUE_PREFETCH if max_buffered_per_partition is None else max_buffered_per_partition
        self.shutdown_timeout = shutdown_timeout_ms / 1000
        self.revoke_timeout_s = self.shutdown_timeout
        # Dramatiq's worker_timeout (ms): how long an idle wait lasts before looking again
        self.poll_timeout_ms = worker_timeout if worker_timeout is not None else poll_timeout_ms
        self.dependency_min_backoff_ms = dependency_min_backoff_ms
        self.dependency_max_backoff_ms = dependency_max_backoff_ms

        self.consumer: Consumer | None = None
        self.forwarder = DelayForwarder(broker) if forward_delays and broker.delay_prefix else None
        self.failure: BaseException | None = None  # set if the consumer thread died
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._ready = _ReadyQueue()
        self._delayed: list[tuple[float, int, _Work]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._draining = False
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unpaused = threading.Event()
        self._unpaused.set()
        self._subscribed: list[str] = []
        self._declarations = -1  # the broker's declaration count the subscription was made at

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Join the group and start processing in background threads."""
        self._declarations = self.broker.declarations
        topics = self.topics or sorted(self.broker.get_declared_topics())
        if not topics and not getattr(self.broker, "consumes_later_topics", False):
            raise ValueError("no topics to consume: declare actors (import your tasks) or pass topics=")
        self.broker.emit_before("worker_boot", self)
        self.consumer = self.broker.consume(topics, self.group_id, listener=self, instance_id=self.instance_id)
        self._subscribed = topics
        if not self.topics:
            self.consumer.follows_declarations = True  # type: ignore[attr-defined]  # the stub's join looks
        for i in range(self.worker_threads):
            thread = threading.Thread(target=self._work_loop, name=f"worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        consumer_thread = threading.Thread(target=self._consume_loop, name="consumer", daemon=True)
        consumer_thread.start()
        self._threads.append(consumer_thread)
        retry_thread = threading.Thread(target=self._retry_loop, name="retries", daemon=True)
        retry_thread.start()
        self._threads.append(retry_thread)
        if self.forwarder is not None:
            self.forwarder.start()
        self.broker.emit_after("worker_boot", self)
        log.info("worker started", extra={"topics": topics, "group": self.group_id, "threads": self.worker_threads})

    def stop(self, timeout_ms: int | None = None) -> None:
        """Drain and leave the group; returns when done (or after the shutdown timeout)."""
        if timeout_ms is not None:
            self.shutdown_timeout = timeout_ms / 1000
        self.broker.emit_before("worker_shutdown", self)
        self._stop_requested.set()
        if self.forwarder is not None:
            self.forwarder.stop()
        for thread in self._threads:
            thread.join(self.shutdown_timeout + 30)
        self.broker.emit_after("worker_shutdown", self)

    def pause(self) -> None:
        """Start no new message until :meth:`resume` (running ones finish); the consumer keeps
        polling, so the member stays in its group, and fetched records wait in memory."""
        self._unpaused.clear()

    def resume(self) -> None:
        """Start messages again after :meth:`pause`."""
        self._unpaused.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has stopped (by :meth:`stop` or a failure); True if it has."""
        return self._stopped.wait(timeout)

    def join(self, timeout_ms: int | None = None) -> None:
        """Wait until everything fetched so far has finished and been committed (for tests)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        with self._changed:
            while not self._idle():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("worker did not become idle in time")
                self._changed.wait(0.05 if remaining is None else min(remaining, 0.05))

    def status(self) -> dict[str, Any]:
        """What this worker is doing, for operators (``worker.py status``): ``running``,
        ``waiting_on_dependency`` (messages waiting out an outage) or ``draining``."""
        with self._lock:
            waiting = sum(1 for _, _, w in self._delayed if w.proxy is not None and w.proxy.transient)
            retrying_by_actor: dict[str, int] = {}
            for _, _, w in self._delayed:
                if w.proxy is not None and not w.proxy.transient:
                    retrying_by_actor[w.proxy.actor_name] = retrying_by_actor.get(w.proxy.actor_name, 0) + 1
            state = "waiting_on_dependency" if waiting else "running"
            if self._stop_requested.is_set():
                state = "draining"
            return {
                "state": state,
                "group": self.group_id,
                "partitions": sorted(f"{t}-{p}" for t, p in self._partitions),
                "in_flight": self._in_flight,
                "retrying": len(self._delayed) - waiting,
                "retrying_by_actor": retrying_by_actor,
                "waiting_on_dependency": waiting,
                "buffered": sum(s.buffered for s in self._partitions.values()),
            }

    def _idle(self) -> bool:
        return (
            self._in_flight == 0
            and not self._delayed
            and all(s.buffered == 0 and s.committed == s.next_commit for s in self._partitions.values())
        )

    # ------------------------------------------------------------ rebalance listener (consumer thread)

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._partitions[tp] = PartitionState(tp)
        log.info("partitions assigned", extra={"partitions": sorted(f"{t}-{p}" for t, p in partitions)})

    def revoke_partitions(self, partitions: set[TopicPartition]) -> Revocation:
        """Stop starting work on these partitions; the consumer then waits while
        :meth:`Revocation.busy`, commits :meth:`Revocation.offsets` and calls :meth:`Revocation.done`."""
        with self._lock:
            states = [self._partitions[tp] for tp in partitions if tp in self._partitions]
            for state in states:
                state.revoked = True
        return Revocation(self._changed, self._partitions, states)

    def on_partitions_lost(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                state = self._partitions.pop(tp, None)
                if state is not None:
                    state.revoked = True
        log.warning("partitions lost", extra={"partitions": sorted(f"{t}-{p}" for t, p in partitions)})

    # ------------------------------------------------------------ consumer thread

    def _consume_loop(self) -> None:
        assert self.consumer is not None
        last_commit = time.monotonic()
        self._announce("after", "consumer_thread_boot")
        try:
            while not self._stop_requested.is_set():
                self._follow_declared_topics()
                records = self._poll(self._poll_timeout())
                if records:
                    self._load_skips(records)
                with self._changed:
                    self._dispatch(records)
                    self._apply_backpressure()
                if time.monotonic() - last_commit >= self.commit_interval:
                    self._commit()
                    last_commit = time.monotonic()
            self._drain()
        except BaseException as exc:  # the process must not keep running without a consumer
            log.exception("consumer thread failed")
            self.failure = exc
            self._abandon()
        finally:
            self._announce("before", "consumer_thread_shutdown")
            for _ in range(self.worker_threads):
                self._ready.put(_STOP, priority=float("-inf"))  # before any work: none starts now
            with self._changed:
                self._stopped.set()
                self._changed.notify_all()  # the retry thread ends too

    def _announce(self, when: str, hook: str) -> None:
        """A thread's boot or shutdown hook (Dramatiq's thread hooks); a failing hook is logged,
        it must not take the thread down."""
        emit = self.broker.emit_after if when == "after" else self.broker.emit_before
        try:
            emit(hook, threading.current_thread())
        except Exception:
            log.exception("middleware hook %s_%s failed", when, hook)

    def _follow_declared_topics(self) -> None:
        """Without ``topics=``, subscribe to a topic an actor declared after the worker started."""
        if self.topics or self.broker.declarations == self._declarations:
            return
        self._declarations = self.broker.declarations
        topics = sorted(self.broker.get_declared_topics())
        subscribe = getattr(self.consumer, "subscribe", None)
        if topics != self._subscribed and subscribe is not None:
            subscribe(topics)
            self._subscribed = topics
            log.info("subscription changed", extra={"topics": topics})

    def _poll(self, timeout_ms: int) -> list[Record]:
        assert self.consumer is not None
        try:
            return self.consumer.poll(timeout_ms, self.max_poll_records)
        except BrokerUnavailable as exc:
            log.warning("poll failed; retrying", extra={"error": str(exc)})
            time.sleep(min(1.0, timeout_ms / 1000))
            return []

    def _poll_timeout(self) -> int:
        return self.poll_timeout_ms  # retries do not wait for a poll: the retry thread releases them

    def _load_skips(self, records: list[Record]) -> None:
        """Read, once per assignment, which records of these partitions a previous owner already
        finished (the commit's metadata, see broker.offsets), before any of them is dispatched.
        Called without the worker's lock: it may wait for the broker."""
        assert self.consumer is not None
        with self._lock:
            unread = {r.tp for r in records if (s := self._partitions.get(r.tp)) is not None and s.skip is None}
        if not unread:
            return
        try:
            commits = self.consumer.committed(unread)
        except BrokerUnavailable as exc:  # not knowing only risks running a finished record again
            log.warning("could not read the finished-ahead offsets; they may run again", extra={"error": str(exc)})
            commits = {}
        with self._lock:
            for tp in unread:
                state = self._partitions.get(tp)
                if state is not None and state.skip is None:
                    commit = commits.get(tp)
                    state.skip = decode_done(commit.offset, commit.metadata) if commit is not None else set()
                    if commit is not None:
                        state.committed, state.committed_metadata = commit

    def _dispatch(self, records: list[Record]) -> None:
        for record in records:
            state = self._partitions.get(record.tp)
            if state is None or state.revoked:
                continue  # fetched just before a revocation: the next owner reads it again
            state.track(record.offset)
            if state.skip and record.offset in state.skip:
                state.skip.discard(record.offset)
                state.finish(record.offset)  # a previous owner ran it: its commit said so
                continue
            key = record.key
            if key is None:
                self._make_ready(_Work(state, record))
            elif key in state.keys:
                state.keys[key].append(record)
            else:
                state.keys[key] = deque()
                self._make_ready(_Work(state, record))

    def _retry_loop(self) -> None:
        """Hand each retry to the worker threads when it is due (a thread of its own).

        Not the consumer thread's job: it spends most of its time inside ``poll``, so a retry due
        now (a zero or short backoff) would wait for the poll to return, up to
        ``poll_timeout_ms``. Scheduling a retry notifies the condition this thread sleeps on."""
        with self._changed:
            while not self._stopped.is_set():
                self._release_due_retries()
                timeout = self._delayed[0][0] - time.monotonic() if self._delayed else None
                self._changed.wait(timeout)

    def _release_due_retries(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, work = heapq.heappop(self._delayed)
            if not work.state.revoked:
                self._make_ready(work)

    def _apply_backpressure(self) -> None:
        assert self.consumer is not None
        for state in self._partitions.values():
            if not state.paused and state.buffered >= self.max_buffered:
                self.consumer.pause([state.tp])
                state.paused = True
            elif state.paused and state.buffered <= self.max_buffered // 2:
                self.consumer.resume([state.tp])
                state.paused = False

    def _commit(self) -> None:
        """Commit every assigned partition's finished prefix (revoked ones commit through Revocation)."""
        assert self.consumer is not None
        with self._lock:
            chosen = list(self._partitions.values())
            offsets = committable(chosen)
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except BrokerUnavailable as exc:
            log.warning("offset commit failed; will retry", extra={"error": str(exc)})
            return
        with self._changed:
            for s in chosen:
                if s.tp in offsets:
                    s.committed, s.committed_metadata = offsets[s.tp]
            self._changed.notify_all()

    def _drain(self) -> None:
        """Stop fetching, let running messages finish, commit, leave the group."""
        assert self.consumer is not None
        with self._changed:
            self._draining = True
            self._delayed.clear()  # not committed: redelivered to the next owner
            paused = [s.tp for s in self._partitions.values()]
        self.consumer.pause(paused)
        deadline = time.monotonic() + self.shutdown_timeout
        while True:
            with self._lock:
                busy = self._in_flight
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
        with self._lock:
            self._draining = True
            self._delayed.clear()
        try:
            if self.consumer is not None:
                self.consumer.close()
        except Exception:
            log.exception("closing the consumer failed")

    # ------------------------------------------------------------ worker threads

    def _work_loop(self) -> None:
        self._announce("after", "worker_thread_boot")
        try:
            self._work()
        finally:
            self._announce("before", "worker_thread_shutdown")

    def _work(self) -> None:
        while True:
            while not self._unpaused.wait(0.1) and not self._stop_requested.is_set():
                pass  # paused: take nothing, so the ready records keep their order for the resume
            entry = self._ready.take()
            work = entry[2]
            if work is _STOP:
                return
            if not self._unpaused.is_set() and not self._stop_requested.is_set():
                self._ready.give_back(entry)  # paused while this thread waited: back in its place
                continue
            batch, alone = self._gather_batch(work)
            if batch:
                alone = self._process_batch(batch) + alone
            for work in alone:
                while work is not None:
                    work = self._process(work)

    def _make_ready(self, work: _Work) -> None:
        """Queue a record for the worker threads: lowest actor ``priority`` first (Dramatiq's order
        within a worker process), then in arrival order. Only when some actor has a priority is
        the record decoded here, to learn its actor."""
        priority = 0
        if self.broker.prioritised:
            if work.proxy is None:
                try:
                    message = Message.decode(work.record.value)
                    self.broker.get_actor(message.actor_name)
                    work.proxy = _proxy(message, work.record)
                except Exception:  # on the consumer thread nothing may escape: _run dead-letters it
                    work.proxy = None
            if work.proxy is not None:
                priority = getattr(self.broker.actors.get(work.proxy.actor_name), "priority", 0)
        self._ready.put(work, priority=priority)

    # ------------------------------------------------------------ batches

    def _batch_actor(self, work: _Work) -> Any:
        """The actor of ``work`` if it has a batch form and this is a first delivery, else None.

        Decodes the record (once: the proxy is kept); anything odd is left to :meth:`_process`."""
        if work.proxy is None:
            try:
                message = Message.decode(work.record.value)
                actor = self.broker.get_actor(message.actor_name)
            except (DecodeError, ActorNotFound):
                return None
            work.proxy = _proxy(message, work.record)
        else:
            actor = self.broker.get_actor(work.proxy.actor_name)
        if work.proxy.attempt > 1 or work.proxy.dependency_failures:
            return None  # a retry (in place, or sent as a delayed message) keeps its own attempt count
        if self._early(work.proxy.message):
            return None  # not due yet: _process sends it back to the delay topics
        return actor if getattr(actor, "batch_fn", None) is not None else None

    def _gather_batch(self, first: _Work) -> tuple[list[_Work], list[_Work]]:
        """``first`` and the ready records of the same batch-capable actor waiting behind it.

        Every record in the ready queue is the head of its key (the next one of a key is queued
        only once its predecessor finished), so a batch never holds two records of one key.
        Returns (batch, records to run one by one)."""
        actor = self._batch_actor(first)
        if actor is None:
            return [], [first]
        batch, alone = [first], []
        while len(batch) < actor.batch_size:
            try:
                work = self._ready.take_nowait()[2]
            except queue.Empty:
                break
            if work is _STOP:
                self._ready.put(_STOP, priority=float("-inf"))  # for this thread's next turn
                break
            if self._batch_actor(work) is actor:
                batch.append(work)
            else:
                alone.append(work)
        if len(batch) == 1:
            return [], batch + alone
        return batch, alone

    def _process_batch(self, batch: list[_Work]) -> list[_Work]:
        """Run ``batch`` with its actor's batch function. On success each record is finished and
        the next record of its key is queued; if the batch fails, nothing of it was stored and its
        records are returned to run one by one (each with its own retries and dead letter)."""
        with self._lock:
            if self._draining:
                return []  # not started, not committed: redelivered later
            batch = [w for w in batch if not w.state.revoked]
            for work in batch:
                work.state.in_flight += 1
                self._in_flight += 1
        if not batch:
            return []
        broker = self.broker
        proxies = [w.proxy for w in batch]
        actor = broker.get_actor(proxies[0].actor_name)  # type: ignore[union-attr]
        started: list[MessageProxy] = []
        failure: BaseException | None = None
        try:
            for proxy in proxies:
                broker.emit_before("process_message", proxy)
                started.append(proxy)  # type: ignore[arg-type]
            actor.batch_fn([Call(p.message.args, p.message.kwargs) for p in proxies])  # type: ignore[union-attr]
        except (Exception, Interrupt) as exc:
            failure = exc
        if failure is None:
            try:
                for proxy in started:
                    broker.emit_after("process_message", proxy, result=None, exception=None)
            except Interrupt:
                pass  # the limit fired after the batch returned; its outcome stands
        else:
            for proxy in started:
                broker.emit_after("skip_message", proxy)
            log.info(
                "a batch failed; running its messages one by one",
                extra={"actor": actor.actor_name, "messages": len(batch), "error": type(failure).__name__},
            )
        with self._changed:
            for work in batch:
                work.state.in_flight -= 1
                self._in_flight -= 1
                if failure is None:
                    work.state.finish(work.record.offset)
                    following = self._next_for_key(work.state, work.record.key)
                    if following is not None:
                        self._make_ready(following)
            self._changed.notify_all()
        return list(batch) if failure is not None else []

    def _process(self, work: _Work) -> _Work | None:
        """Run one delivery; return the next record of the same key, if it may run now."""
        state = work.state
        with self._lock:
            if state.revoked or self._draining:
                return None  # not started, not committed: redelivered later
            state.in_flight += 1
            self._in_flight += 1
        outcome: object = _ABANDONED
        try:
            outcome = self._run(work)
        except Exception as exc:
            outcome = self._after_worker_error(work, exc)
        finally:
            with self._changed:
                state.in_flight -= 1
                self._in_flight -= 1
                if outcome is _ABANDONED:
                    following = None
                elif outcome is not None:
                    retry_delay_ms: int = outcome  # type: ignore[assignment]
                    due = time.monotonic() + retry_delay_ms / 1000
                    heapq.heappush(self._delayed, (due, next(self._sequence), work))
                    following = None
                else:
                    state.finish(work.record.offset)
                    following = self._next_for_key(state, work.record.key)
                self._changed.notify_all()
        return following

    def _after_worker_error(self, work: _Work, exc: Exception) -> object:
        """The worker itself (or a middleware) failed on this record, outside the actor.

        That must not stop the worker: a restart would fetch the same record and fail again, for
        ever. So the record is dead-lettered (reason ``worker_error``, with the traceback) and the
        partition moves on. Only if even that fails is the worker stopped, leaving the record
        uncommitted (neither processed nor dead-lettered: the offset must not move past it).
        """
        if self._stop_requested.is_set():
            return _ABANDONED  # shutting down: redelivered later
        record = work.record
        log.exception(
            "the worker failed on a record; dead-lettering it",
            extra={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        )
        message = work.proxy.message if work.proxy is not None else None
        attempts = work.proxy.attempt if work.proxy is not None else 0
        try:
            self._dead_letter(record, exc, message, attempts=attempts, reason=REASON_WORKER_ERROR)
            return None
        except Exception as error:
            if not self._stop_requested.is_set():
                log.exception("could not dead-letter a record; stopping the worker")
                self.failure = error
                self._stop_requested.set()
            return _ABANDONED

    def _next_for_key(self, state: PartitionState, key: bytes | None) -> _Work | None:
        if key is None:
            return None
        waiting = state.keys.get(key)
        if waiting:
            if state.revoked or self._draining:
                return None
            return _Work(state, waiting.popleft())
        state.keys.pop(key, None)
        return None

    def _run(self, work: _Work) -> int | None:
        """Run the actor once. Returns a retry delay in ms, or None when the record is finished
        (succeeded, or dead-lettered and acknowledged)."""
        broker, record = self.broker, work.record
        if work.proxy is None:
            try:
                message = Message.decode(record.value)
                broker.get_actor(message.actor_name)
            except DecodeError as exc:
                self._dead_letter(record, exc, None, attempts=0, reason=REASON_UNDECODABLE)
                return None
            except ActorNotFound as exc:
                self._dead_letter(record, exc, message, attempts=0, reason=REASON_UNKNOWN_ACTOR)
                return None
            work.proxy = _proxy(message, record)
        proxy = work.proxy
        actor = broker.get_actor(proxy.actor_name)
        message = proxy.message
        if self._early(message):
            return self._delay_again(work)
        result = exception = None
        try:
            broker.emit_before("process_message", proxy)
        except SkipMessage as skip:
            proxy.exception = skip
            return self._skipped(work)
        except (Exception, Interrupt) as exc:
            # a before-hook failed (a dependency it needs, a time limit that fired already): this
            # attempt failed, as if the actor had raised it, so a dependency outage is waited out
            # and anything else retried; the actor does not run
            exception = exc
        if exception is None:
            try:
                result = actor.fn(*message.args, **message.kwargs)
                if inspect.isawaitable(result):
                    _refuse_awaitable(result, message.actor_name)
            except (Exception, Interrupt) as exc:  # an Interrupt (time limit) is a failure like any other
                exception = exc
        proxy.exception = exception
        proxy.transient = exception is not None and self._is_transient(actor.options, exception)
        try:
            broker.emit_after("process_message", proxy, result=result, exception=exception)
        except Interrupt:
            pass  # the limit fired after the actor returned; its outcome stands
        except Exception as exc:
            if exception is not None or not transient.is_transient(exc):
                raise  # a middleware's own failure: the worker dead-letters the record
            # a dependency failed while finishing a success (storing its result, sending the next
            # step of a pipeline): run the message again once it is back, as for the actor itself
            exception, proxy.transient = exc, True
        if exception is None:
            if proxy.dependency_failures:
                log.info("the dependency is back", extra={"message_id": message.message_id})
            if result is not None:
                self._warn_discarded(actor, proxy)
            self._hook("before", "ack", proxy)
            self._hook("after", "ack", proxy)  # committable now; the commit itself is batched
            return None
        if proxy.transient:
            proxy.dependency_failures += 1
            delay = transient.backoff_ms(
                proxy.dependency_failures, self.dependency_min_backoff_ms, self.dependency_max_backoff_ms
            )
            broker.emit("on_dependency_wait", proxy, delay)
            proxy.exception = None
            return delay
        delay = proxy.retry_delay_ms
        if delay is not None and not proxy.failed:
            broker.emit("on_retry", proxy, delay)
            if not actor.options.get("ordered", True) and self._retry_later(proxy, delay):
                return None  # the retry is a delayed message now: the key moves on
            proxy.attempt += 1
            proxy.retry_delay_ms = None
            proxy.exception = None
            # as Dramatiq's retried messages say: retries so far, and when the retry was scheduled
            # (only the delivery's copy: the record, its dead letter and its id are unchanged)
            proxy._message = message.copy(
                options={**message.options, "retries": proxy.attempt - 1, "requeue_timestamp": now_ms()}
            )
            return delay
        self._hook("before", "nack", proxy)
        self._dead_letter(record, exception, message, attempts=proxy.attempt, reason=REASON_FAILED)
        self._hook("after", "nack", proxy)
        return None

    def _warn_discarded(self, actor: Any, proxy: MessageProxy) -> None:
        """An actor returned a value nobody will read (as Dramatiq warns)."""
        if proxy.options.get("pipe_target") is not None:
            return
        from broker.results.middleware import Results

        results = [m for m in self.broker.middleware if isinstance(m, Results)]
        if not results:
            log.warning(
                "Actor '%s' returned a value that is not None, and you haven't added the Results middleware to "
                "the broker, so the value has been discarded. Consider adding the Results middleware to your "
                "broker or piping the result into another actor.",
                actor.actor_name,
            )
        elif not actor.options.get("store_results", results[0].store_results):
            log.warning(
                "Actor '%s' returned a value that is not None, but you haven't set its `store_results' option "
                "to `True', so the value has been discarded.",
                actor.actor_name,
            )

    def _skipped(self, work: _Work) -> None:
        """A middleware raised :class:`SkipMessage` before the actor ran: the message is finished
        without running, or dead-lettered if that middleware failed it (``AgeLimit``)."""
        proxy = work.proxy
        assert proxy is not None
        log.warning("message skipped", extra={"message_id": proxy.message_id, "actor": proxy.actor_name})
        self.broker.emit_after("skip_message", proxy)
        if proxy.failed:
            error = proxy.exception or SkipMessage("skipped by a middleware")
            proxy.exception = None
            self._hook("before", "nack", proxy)
            self._dead_letter(work.record, error, proxy.message, attempts=proxy.attempt, reason=REASON_FAILED)
            self._hook("after", "nack", proxy)
        else:
            proxy.exception = None
            self._hook("before", "ack", proxy)
            self._hook("after", "ack", proxy)

    def _hook(self, when: str, hook: str, proxy: MessageProxy) -> None:
        """An outcome hook (ack, nack, delay_message): the outcome is decided, so a failing hook is
        logged and changes nothing."""
        emit = self.broker.emit_after if when == "after" else self.broker.emit_before
        try:
            emit(hook, proxy)
        except Exception:
            log.exception("middleware hook %s_%s failed", when, hook)

    def _early(self, message: Message) -> bool:
        """Whether the message arrived before its eta (sent there directly, or forwarded by a
        host whose clock runs ahead): it must not run yet, and must not hold its key."""
        eta = message.options.get("eta")
        if eta is not None and (isinstance(eta, bool) or not isinstance(eta, int)):
            # written by another producer (our senders refuse it): run it now, as Dramatiq does
            log.warning("Invalid eta value for message %s: %r (not integer epoch ms); running it now", message, eta)
            return False
        return bool(self.broker.delay_prefix) and eta is not None and eta > now_ms()

    def _delay_again(self, work: _Work) -> int | None:
        """Send an early message back to the delay topics and finish its record; if Kafka does not
        take it, wait here (in order) and try again."""
        assert work.proxy is not None
        self._hook("before", "delay_message", work.proxy)
        try:
            self.broker.enqueue(work.proxy.message)
        except (BrokerUnavailable, ValueError) as exc:
            log.warning("could not re-delay an early message; waiting", extra={"error": str(exc)})
            return max(1, work.proxy.message.options["eta"] - now_ms())
        return None

    def _retry_later(self, proxy: MessageProxy, delay_ms: int) -> bool:
        """``ordered=False``: send the retry as a delayed message (same id, its attempt count in
        the ``retries`` option) so its partition and key move on. False if Kafka did not take it:
        the retry then happens in place, as for an ordered actor."""
        message = proxy.message
        retry = message.copy(options={**message.options, "retries": proxy.attempt, "requeue_timestamp": now_ms()})
        self._hook("before", "delay_message", proxy)
        try:
            self.broker.enqueue(retry, delay=delay_ms)
        except (BrokerUnavailable, ValueError) as exc:
            log.warning("could not send a retry to the delay topics; retrying in place", extra={"error": str(exc)})
            return False
        return True

    @staticmethod
    def _is_transient(options: dict, exception: BaseException) -> bool:
        """A dependency's failure (wait for it), not the message's; ``throws`` wins over it."""
        throws = options.get("throws")
        if throws and isinstance(exception, throws):
            return False
        return transient.is_transient(exception, options.get("transient") or ())

    def _dead_letter(
        self, record: Record, exc: BaseException, message: Message | None, *, attempts: int, reason: str
    ) -> None:
        """Write the dead letter; if the broker cannot take it, keep trying (the offset must not move
        past a record that is neither processed nor dead-lettered) unless we are shutting down."""
        backoff = 0.5
        while True:
            try:
                self.broker.dead_letter(record, exc, message=message, attempts=attempts, reason=reason)
                return
            except BrokerUnavailable as error:
                if self._stop_requested.is_set():
                    raise
                log.warning("dead letter not acknowledged; retrying", extra={"error": str(error)})
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)


class _ReadyQueue:
    """The records the worker threads may start: entries ``(priority, arrival, item)``, lowest first."""

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._arrivals = itertools.count()

    def put(self, item: object, *, priority: float = 0) -> None:
        self._queue.put((priority, next(self._arrivals), item))

    def take(self) -> tuple[float, int, Any]:
        return self._queue.get()

    def take_nowait(self) -> tuple[float, int, Any]:
        return self._queue.get_nowait()

    def give_back(self, entry: tuple[float, int, Any]) -> None:
        """Return an entry taken, in its place (its arrival number kept)."""
        self._queue.put(entry)


def _refuse_awaitable(result: Any, actor_name: str) -> None:
    """An actor returned a coroutine (a plain function wrapping an ``async def``): its body has not
    run, so the message must fail, not be committed as done."""
    if inspect.iscoroutine(result):
        result.close()  # never awaited, on purpose: no warning
    raise TypeError(
        f"actor {actor_name!r} returned an awaitable instead of running: declare it with async def "
        "(and the AsyncIO middleware) so the worker awaits it"
    )


def _proxy(message: Message, record: Record) -> MessageProxy:
    """The delivery of ``message``; a retry sent as a delayed message (``ordered=False``) carries
    how many attempts came before it in its ``retries`` option."""
    retries = message.options.get("retries", 0)
    return MessageProxy(message, record, attempt=retries + 1 if isinstance(retries, int) else 1)
