"""The :class:`Worker`: what an application holds. It starts and stops the threads, answers for
their state (``status``, ``join``, ``wait``) and is the consumer's rebalance listener.

It does no processing itself. The consumer thread (:mod:`broker.worker.consumer_loop`) fetches,
hands out and commits; the worker threads (:mod:`broker.worker.work_loop`) run records through
:mod:`broker.worker.runner` and :mod:`broker.worker.batches`; all of them meet in one
:class:`~broker.worker.state.WorkerState`. Rebalance callbacks come on the consumer thread (from
inside its poll) and only mark partitions and hand back a :class:`~broker.offsets.Revocation`;
the consumer waits on that, so a revoked partition's running records can finish and commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from broker import transient
from broker.broker import Broker
from broker.consumer import Consumer, TopicPartition
from broker.delay_forwarder import DelayForwarder
from broker.offsets import PartitionState, Revocation
from broker.worker.batches import Batches
from broker.worker.consumer_loop import ConsumerLoop
from broker.worker.runner import Runner
from broker.worker.state import WorkerState
from broker.worker.work_loop import WorkLoop

log = logging.getLogger("broker.worker")  # the package's logger (the name its records always had)

DEFAULT_GROUP = "workers"  # applications pass their own


class Worker:
    """Runs the actors declared on ``broker``.

    Parameters:
      broker: a :class:`~broker.broker.Broker` (Kafka or stub).
      topics: topics to consume; default: the topics of the broker's actors.
      group_id: the consumer group (default ``workers``).
      worker_threads: how many actors may run at once in this process.
      commit_interval_ms: how often finished offsets are committed.
      max_buffered_per_partition: fetched-but-unfinished records above which a partition is paused
        (default :data:`broker.worker.QUEUE_PREFETCH`, 2000).
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
        self.max_buffered = _queue_prefetch() if max_buffered_per_partition is None else max_buffered_per_partition
        self.shutdown_timeout = shutdown_timeout_ms / 1000
        self.revoke_timeout_s = self.shutdown_timeout
        # Dramatiq's worker_timeout (ms): how long an idle wait lasts before looking again
        self.poll_timeout_ms = worker_timeout if worker_timeout is not None else poll_timeout_ms
        self.dependency_min_backoff_ms = dependency_min_backoff_ms
        self.dependency_max_backoff_ms = dependency_max_backoff_ms

        self.consumer: Consumer | None = None
        self.forwarder = DelayForwarder(broker) if forward_delays and broker.delay_prefix else None
        self._shared = WorkerState(broker)
        self._threads: list[threading.Thread] = []

    @property
    def failure(self) -> BaseException | None:
        """Why the worker stopped by itself (its consumer thread died, or a record could not even
        be dead-lettered); None while it runs or after a requested stop."""
        return self._shared.failure

    @failure.setter
    def failure(self, value: BaseException | None) -> None:
        self._shared.failure = value

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Join the group and start processing in background threads."""
        broker, shared = self.broker, self._shared
        declarations = broker.declarations
        topics = self.topics or sorted(broker.get_declared_topics())
        if not topics and not getattr(broker, "consumes_later_topics", False):
            raise ValueError("no topics to consume: declare actors (import your tasks) or pass topics=")
        broker.emit_before("worker_boot", self)
        consumer: Consumer = broker.consume(topics, self.group_id, listener=self, instance_id=self.instance_id)
        self.consumer = consumer
        if not self.topics:
            consumer.follows_declarations = True  # type: ignore[attr-defined]  # the stub's join looks
        consumer_loop = ConsumerLoop(broker, shared, consumer, self, subscribed=topics, declarations=declarations)
        runner = Runner(
            broker,
            shared,
            dependency_min_backoff_ms=self.dependency_min_backoff_ms,
            dependency_max_backoff_ms=self.dependency_max_backoff_ms,
        )
        work_loop = WorkLoop(broker, shared, runner, Batches(broker, shared))
        for i in range(self.worker_threads):
            self._start_thread(work_loop.run, f"worker-{i}")
        self._start_thread(consumer_loop.run, "consumer")
        self._start_thread(consumer_loop.run_retries, "retries")
        if self.forwarder is not None:
            self.forwarder.start()
        broker.emit_after("worker_boot", self)
        log.info("worker started", extra={"topics": topics, "group": self.group_id, "threads": self.worker_threads})

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_ms: int | None = None) -> None:
        """Drain and leave the group; returns when done (or after the shutdown timeout)."""
        if timeout_ms is not None:
            self.shutdown_timeout = timeout_ms / 1000
        self.broker.emit_before("worker_shutdown", self)
        self._shared.stop_requested.set()
        wakeup = getattr(self.consumer, "wakeup", None)  # the stub's: the poll under way returns now
        if wakeup is not None:
            wakeup()
        if self.forwarder is not None:
            self.forwarder.stop()
        for thread in self._threads:
            thread.join(self.shutdown_timeout + 30)
        self.broker.emit_after("worker_shutdown", self)

    def pause(self) -> None:
        """Start no new message until :meth:`resume` (running ones finish); the consumer keeps
        polling, so the member stays in its group, and fetched records wait in memory."""
        self._shared.unpaused.clear()

    def resume(self) -> None:
        """Start messages again after :meth:`pause`."""
        self._shared.unpaused.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has stopped (by :meth:`stop` or a failure); True if it has."""
        return self._shared.stopped.wait(timeout)

    def join(self, timeout_ms: int | None = None) -> None:
        """Wait until everything fetched so far has finished and been committed (for tests)."""
        shared = self._shared
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        with shared.changed:
            while not shared.idle():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("worker did not become idle in time")
                shared.changed.wait(0.05 if remaining is None else min(remaining, 0.05))

    def status(self) -> dict[str, Any]:
        """What this worker is doing, for operators (``worker.py status``): ``running``,
        ``waiting_on_dependency`` (messages waiting out an outage) or ``draining``."""
        shared = self._shared
        with shared.lock:
            waiting = sum(1 for _, _, w in shared.delayed if w.proxy is not None and w.proxy.transient)
            retrying_by_actor: dict[str, int] = {}
            for _, _, w in shared.delayed:
                if w.proxy is not None and not w.proxy.transient:
                    retrying_by_actor[w.proxy.actor_name] = retrying_by_actor.get(w.proxy.actor_name, 0) + 1
            state = "waiting_on_dependency" if waiting else "running"
            if shared.stop_requested.is_set():
                state = "draining"
            return {
                "state": state,
                "group": self.group_id,
                "partitions": sorted(f"{t}-{p}" for t, p in shared.partitions),
                "in_flight": shared.in_flight,
                "retrying": len(shared.delayed) - waiting,
                "retrying_by_actor": retrying_by_actor,
                "waiting_on_dependency": waiting,
                "buffered": sum(s.buffered for s in shared.partitions.values()),
            }

    # ------------------------------------------------------------ rebalance listener (consumer thread)

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        """Start bookkeeping for newly assigned partitions."""
        with self._shared.lock:
            for tp in partitions:
                self._shared.partitions[tp] = PartitionState(tp)
        log.info("partitions assigned", extra={"partitions": sorted(f"{t}-{p}" for t, p in partitions)})

    def revoke_partitions(self, partitions: set[TopicPartition]) -> Revocation:
        """Stop starting work on these partitions; the consumer then waits while
        :meth:`Revocation.busy`, commits :meth:`Revocation.offsets` and calls :meth:`Revocation.done`."""
        shared = self._shared
        with shared.lock:
            states = [shared.partitions[tp] for tp in partitions if tp in shared.partitions]
            for state in states:
                state.revoked = True
        return Revocation(shared.changed, shared.partitions, states)

    def on_partitions_lost(self, partitions: set[TopicPartition]) -> None:
        """Forget partitions another member already owns: nothing of them may be committed."""
        with self._shared.lock:
            for tp in partitions:
                state = self._shared.partitions.pop(tp, None)
                if state is not None:
                    state.revoked = True
        log.warning("partitions lost", extra={"partitions": sorted(f"{t}-{p}" for t, p in partitions)})


def _queue_prefetch() -> int:
    """The default prefetch, read from ``broker.worker`` each time a worker is built, so that
    patching ``broker.worker.QUEUE_PREFETCH`` changes the workers built afterwards (as in Dramatiq)."""
    from broker import worker  # the package imports this module: read it at call time

    return worker.QUEUE_PREFETCH
