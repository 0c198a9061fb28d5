"""Batches: the ``@actor.batched`` path, where one call runs many messages of one actor.

A worker thread that takes a record of an actor with a batch form also takes the ready records
of the same actor queued behind it (up to the actor's ``batch_size``) and runs them in one call
of its batch function. Order per key still holds: every record in the ready queue is the head of
its key, so a batch never holds two records of one key.

A batch is all or nothing. If it succeeds each record is finished; if it fails nothing of it was
stored, and its records run one by one through the :class:`~broker.worker.runner.Runner`, each
with its own retries and dead letter. Only first deliveries are batched: a retry keeps its own
attempt count, and a message not yet due goes back to the delay topics through the runner.
"""

from __future__ import annotations

import logging
import queue
from typing import Any

from broker.actor import Actor, Call
from broker.broker import Broker
from broker.errors import ActorNotFound, DecodeError, Interrupt
from broker.message import Message
from broker.proxy import MessageProxy
from broker.worker.runner import early
from broker.worker.state import STOP, Stop, Work, WorkerState

log = logging.getLogger("broker.worker")  # the package's logger (the name its records always had)


class Batches:
    """Gathers batches from the ready queue (:meth:`gather`) and runs them (:meth:`run`)."""

    def __init__(self, broker: Broker, shared: WorkerState) -> None:
        self.broker = broker
        self.shared = shared

    def gather(self, first: Work) -> tuple[list[Work], list[Work]]:
        """``first`` and the ready records of the same batch-capable actor waiting behind it.

        Returns (batch, records to run one by one): no batch when ``first`` has no batch form
        or nothing joined it."""
        actor = self._batch_actor(first)
        if actor is None:
            return [], [first]
        batch, alone = [first], []
        while len(batch) < actor.batch_size:
            try:
                work: Work | Stop = self.shared.ready.take_nowait()[2]
            except queue.Empty:
                break
            if isinstance(work, Stop):
                self.shared.ready.put(STOP, priority=float("-inf"))  # for this thread's next turn
                break
            if self._batch_actor(work) is actor:
                batch.append(work)
            else:
                alone.append(work)
        if len(batch) == 1:
            return [], batch + alone
        return batch, alone

    def run(self, batch: list[Work]) -> list[Work]:
        """Run ``batch`` with its actor's batch function. On success each record is finished and
        the next record of its key is queued; if the batch fails, nothing of it was stored and its
        records are returned to run one by one (each with its own retries and dead letter)."""
        shared = self.shared
        batch = shared.begin(batch)
        if not batch:
            return []
        broker = self.broker
        proxies = [_proxy_of(w) for w in batch]
        actor = broker.get_actor(proxies[0].actor_name)
        started: list[MessageProxy] = []
        failure: BaseException | None = None
        try:
            for proxy in proxies:
                broker.emit_before("process_message", proxy)
                started.append(proxy)
            assert actor.batch_fn is not None  # gathered only for an actor with a batch form
            actor.batch_fn([Call(p.message.args, p.message.kwargs) for p in proxies])
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
        with shared.changed:
            for work in batch:
                shared.release(work)
                if failure is None:
                    work.state.finish(work.record.offset)
                    following = shared.next_for_key(work.state, work.record.key)
                    if following is not None:
                        shared.make_ready(following)
            shared.changed.notify_all()
        return list(batch) if failure is not None else []

    def _batch_actor(self, work: Work) -> Actor[..., Any] | None:
        """The actor of ``work`` if it has a batch form and this is a first delivery, else None.

        Decodes the record (once: the proxy is kept); anything odd is left to the runner."""
        if work.proxy is None:
            try:
                message = Message.decode(work.record.value)
                actor = self.broker.get_actor(message.actor_name)
            except (DecodeError, ActorNotFound):
                return None
            proxy = work.deliver(message)
        else:
            proxy = work.proxy
            actor = self.broker.get_actor(proxy.actor_name)
        if proxy.attempt > 1 or proxy.dependency_failures:
            return None  # a retry (in place, or sent as a delayed message) keeps its own attempt count
        if early(self.broker, proxy.message):
            return None  # not due yet: the runner sends it back to the delay topics
        return actor if getattr(actor, "batch_fn", None) is not None else None


def _proxy_of(work: Work) -> MessageProxy:
    """The delivery of a gathered record (gathering decoded it)."""
    assert work.proxy is not None
    return work.proxy
