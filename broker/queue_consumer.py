"""Dramatiq's ``broker.consume(queue_name)``: read a topic's messages yourself, one at a time.

    consumer = broker.consume("orders", prefetch=10, timeout=1000)
    for proxy in consumer:          # a MessageProxy, or None after ``timeout`` ms with nothing
        if proxy is None:
            continue
        handle(proxy.message)
        consumer.ack(proxy)         # or consumer.nack(proxy): dead-letter it
    consumer.close()

Built on the broker's group consumer, so it is the same on Kafka and on the stub: the consumer is
a member of ``group_id`` (the workers' group ``workers`` by default, as Dramatiq's consumers
compete with its workers for a queue's messages). Its commit follows the worker's rule: a
partition's committed offset never passes a message that was not acked or nacked, so a message
handed out and never acked is delivered again after a restart or a rebalance (at least once).
Acks commit at once. Use one consumer from one thread (Kafka consumers are not thread-safe).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from broker.consumer import Record, TopicPartition
from broker.dead_letters import REASON_FAILED, REASON_UNDECODABLE
from broker.errors import DecodeError, QueueNotFound
from broker.message import Message
from broker.offsets import PartitionState, Revocation, committable
from broker.proxy import MessageProxy

if TYPE_CHECKING:
    from broker.broker import Broker

DEFAULT_GROUP = "workers"  # the worker's default group (broker.worker.DEFAULT_GROUP)


class QueueConsumer:
    """An iterator of :class:`~broker.proxy.MessageProxy` (or ``None`` when idle) over ``topic``.

    Raises :class:`~broker.errors.QueueNotFound` when the cluster has no such topic. A record
    that is not a message is dead-lettered (reason ``undecodable``) and skipped, as the worker does.
    """

    revoke_timeout_s = 0.0  # a revoked partition's unacked messages go to their next owner

    def __init__(
        self, broker: Broker, topic: str, *, group_id: str | None = None, prefetch: int = 1, timeout: int = 100
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self._changed = threading.Condition()
        self._states: dict[TopicPartition, PartitionState] = {}
        self._buffer: deque[Record] = deque()
        self.consumer = broker.consume([topic], group_id or DEFAULT_GROUP, self)
        if not self.consumer.topic_exists(topic):
            self.consumer.close()
            raise QueueNotFound(f"topic {topic!r} does not exist")

    def __iter__(self) -> QueueConsumer:
        return self

    def __next__(self) -> MessageProxy | None:
        while True:
            if not self._buffer:
                records = self.consumer.poll(self.timeout, self.prefetch)
                with self._changed:
                    for record in records:
                        tracked = self._states.setdefault(record.tp, PartitionState(record.tp))
                        tracked.track(record.offset)
                        self._buffer.append(record)
                if not self._buffer:
                    return None
            record = self._buffer.popleft()
            try:
                message = Message.decode(record.value)
            except DecodeError as exc:
                self.broker.dead_letter(record, exc, reason=REASON_UNDECODABLE)
                self._finish(record)
                continue
            with self._changed:
                state = self._states.get(record.tp)
                if state is not None:
                    state.in_flight += 1
            return MessageProxy(message, record)

    def ack(self, proxy: MessageProxy) -> None:
        """The message was handled: its offset may be committed (committed now, in order)."""
        self._finish(proxy.record, handed_out=True)

    def nack(self, proxy: MessageProxy) -> None:
        """The message failed for good: dead-letter it (waiting for Kafka's acknowledgement), then
        commit past it."""
        error = proxy.exception or RuntimeError("nacked by its consumer")
        record, message = proxy.record, proxy.message
        self.broker.dead_letter(record, error, message=message, attempts=proxy.attempt, reason=REASON_FAILED)
        self._finish(proxy.record, handed_out=True)

    def _finish(self, record: Record, *, handed_out: bool = False) -> None:
        with self._changed:
            state = self._states.get(record.tp)
            if state is None:  # revoked meanwhile: its next owner runs it again
                return
            if handed_out:
                state.in_flight -= 1
            state.finish(record.offset)
            offsets = committable([state])
        if offsets:
            self.consumer.commit(offsets)
            with self._changed:
                state.committed, state.committed_metadata = offsets[record.tp]

    def close(self) -> None:
        """Leave the group; what was acked is committed already."""
        self.consumer.close()

    # ------------------------------------------------------------ the rebalance listener

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None:
        pass  # fetching starts at the group's committed offsets

    def revoke_partitions(self, partitions: set[TopicPartition]) -> Revocation:
        with self._changed:
            self._buffer = deque(r for r in self._buffer if r.tp not in partitions)
            states = [s for tp, s in self._states.items() if tp in partitions]
        return Revocation(self._changed, self._states, states)

    def on_partitions_lost(self, partitions: set[TopicPartition]) -> None:
        with self._changed:
            self._buffer = deque(r for r in self._buffer if r.tp not in partitions)
            for tp in partitions:
                self._states.pop(tp, None)
