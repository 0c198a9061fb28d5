"""An in-memory broker for unit tests, with Kafka's semantics: partitions, keys, groups, offsets.

broker = StubBroker()
set_broker(broker)
worker = Worker(broker, worker_threads=4)
worker.start()
my_actor.send(1, 2)
broker.join(my_actor.topic)   # re-raises the exception of a dead-lettered message
worker.join()
worker.stop()

Dramatiq's views of it (``broker.queues``, ``broker.dead_letters_by_queue``) are in
:mod:`broker.brokers.stub_views`.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterable, Mapping, MutableSequence, Sequence
from typing import Any, NamedTuple

from broker.broker import Broker
from broker.brokers.stub_views import TopicQueue, _DeadLettersByTopic, _Queues
from broker.consumer import Commit, RebalanceListener, Record, TopicPartition
from broker.dead_letters import DEFAULT_DEAD_LETTER_TOPIC, REASON_FAILED, dead_letter_headers
from broker.delays import DEFAULT_DELAY_PREFIX, HEADER_TOPIC
from broker.errors import QueueJoinTimeout, QueueNotFound
from broker.message import Message
from broker.middleware import Middleware


class DeadLetter(NamedTuple):
    record: Record  # as written to the dead-letter topic (original key/value, error headers)
    message: Message | None
    exception: BaseException


class StubBroker(Broker):
    """Parameters: ``partitions`` per topic (topics are created on first use)."""

    consumes_later_topics = True  # a worker may start before any actor is declared (as in Dramatiq)

    def __init__(
        self,
        middleware: Sequence[Middleware] | None = None,
        *,
        partitions: int = 3,
        dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC,
        delay_prefix: str | None = DEFAULT_DELAY_PREFIX,
    ) -> None:
        super().__init__(middleware, dead_letter_topic=dead_letter_topic, delay_prefix=delay_prefix)
        self.partitions = partitions
        self.topics: dict[str, list[list[Record]]] = {}
        self.committed: dict[str, dict[TopicPartition, int]] = {}
        self.commit_metadata: dict[str, dict[TopicPartition, str]] = {}  # finished-ahead maps (broker.offsets)
        self._dead: list[tuple[str, Any]] = []  # (the record's original topic, its DeadLetter), in order
        self._read: dict[TopicPartition, int] = {}  # how far the queues view's get() has read
        self.log_start: dict[TopicPartition, int] = {}  # moved by flush(): the records before it are gone
        self._unraised: list[BaseException] = []
        self._members: dict[str, list[StubConsumer]] = {}
        # who holds each partition: as in Kafka's eager rebalance, a member takes a partition only
        # once its previous owner revoked it (committing what it finished)
        self._owners: dict[str, dict[TopicPartition, StubConsumer]] = {}
        self._generation: dict[str, int] = {}
        self._cond = threading.Condition()
        self._round_robin = 0

    def _topic(self, name: str) -> list[list[Record]]:
        if name not in self.topics:
            self.topics[name] = [[] for _ in range(self.partitions)]
        return self.topics[name]

    def _append(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Record:
        with self._cond:
            parts = self._topic(topic)
            if key is None:
                self._round_robin += 1
                index = self._round_robin % len(parts)
            else:
                index = zlib.crc32(key) % len(parts)
            log = parts[index]
            record = Record(topic, index, len(log), key, value, list(headers), int(time.time() * 1000))
            log.append(record)
            self._cond.notify_all()
        return record

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self._append(topic, key, value, headers)
        return lambda timeout_s: None

    def dead_letter(
        self,
        record: Record,
        exception: BaseException,
        *,
        message: Message | None = None,
        attempts: int = 1,
        reason: str = REASON_FAILED,
    ) -> None:
        headers = dead_letter_headers(
            record, exception, message=message, attempts=attempts, host=self.hostname, reason=reason
        )
        written = self._append(self.dead_letter_topic, record.key, record.value, record.headers + headers)
        with self._cond:
            self._dead.append((record.topic, DeadLetter(written, message, exception)))
            self._unraised.append(exception)
            self._cond.notify_all()
        self.emit("on_dead_letter", record, message, exception)

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Every record dead-lettered so far, in order (``flush_all`` forgets them)."""
        with self._cond:
            return [letter for _, letter in self._dead]

    @property
    def dead_letters_by_queue(self) -> Mapping[str, MutableSequence[Any]]:
        """:attr:`dead_letters` by the topic each record came from (Dramatiq's view by queue).
        Kafka has one dead-letter topic; its ``dlq.original.topic`` header says the same."""
        return _DeadLettersByTopic(self)

    @property
    def queues(self) -> Mapping[str, TopicQueue]:
        """A queue-like view of each topic (Dramatiq's ``broker.queues[name]``): see :class:`TopicQueue`.
        A topic is there once an actor declares it or something was written to it."""
        return _Queues(self)

    # ------------------------------------------------------------ groups

    def _missing_topic(self, topic: str) -> str | None:
        if topic in self.topics or topic in self.get_declared_topics():
            return None
        return f"no actor declares topic {topic!r} and nothing was written to it"

    def _consume_group(
        self, topics: list[str], group_id: str | None, listener: RebalanceListener, *, instance_id: str | None
    ) -> StubConsumer:
        assert group_id is not None, "a group consumer needs its group"
        consumer = StubConsumer(self, topics, group_id, listener)
        with self._cond:
            for t in consumer.topics:
                self._topic(t)
            self._members.setdefault(group_id, []).append(consumer)
            self._generation[group_id] = self._generation.get(group_id, 0) + 1
            self._cond.notify_all()
        return consumer

    def _leave(self, consumer: StubConsumer) -> None:
        with self._cond:
            members = self._members.get(consumer.group_id, [])
            if consumer in members:
                members.remove(consumer)
                self._generation[consumer.group_id] += 1
            owners = self._owners.get(consumer.group_id, {})
            for tp in [tp for tp, owner in owners.items() if owner is consumer]:
                del owners[tp]
            self._cond.notify_all()

    def _assignment(self, consumer: StubConsumer) -> set[TopicPartition]:
        """Round-robin over the group's members, in join order."""
        members = self._members[consumer.group_id]
        tps = sorted(TopicPartition(t, p) for t in consumer.topics for p in range(len(self.topics[t])))
        index = members.index(consumer)
        return {tp for i, tp in enumerate(tps) if i % len(members) == index}

    # ------------------------------------------------------------ test helpers

    def join(self, topic: str, *, timeout: int | None = None, fail_fast: bool = True) -> None:
        """Wait until every group consuming ``topic`` committed all of it, and no delayed message
        for it waits in the delay topics (``timeout`` in ms).

        With ``fail_fast`` re-raise the exception of a message that was dead-lettered meanwhile.
        Raises :class:`~broker.errors.QueueJoinTimeout` (a ``TimeoutError``) when the deadline
        passes first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        missing = self._missing_topic(topic)
        if missing is not None:
            raise QueueNotFound(missing)
        with self._cond:
            while True:
                if fail_fast and self._unraised:
                    raise self._unraised.pop(0)
                if self._consumed(topic):
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueJoinTimeout(f"topic {topic!r} was not fully processed in time")
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))

    def _consumed(self, topic: str) -> bool:
        members = [m for ms in self._members.values() for m in ms]
        if (
            any(m.follows_declarations and topic not in m.topics for m in members)
            and topic in self.get_declared_topics()
        ):
            return False  # a worker following the declared topics has not subscribed to it yet
        groups = [g for g, ms in self._members.items() if any(topic in m.topics for m in ms)]
        parts = self._topic(topic)
        return not self._delayed_for(topic) and all(
            max(self.committed.get(g, {}).get(TopicPartition(topic, p), 0), self.first_offset(TopicPartition(topic, p)))
            >= len(log)
            for g in groups
            for p, log in enumerate(parts)
        )

    def _delayed_for(self, topic: str) -> bool:
        """Whether a delayed message for ``topic`` waits in a delay topic (not yet forwarded)."""
        if not self.delay_prefix:
            return False
        forwarded = self.committed.get(f"{self.delay_prefix}.forwarder", {})
        wanted = topic.encode()
        for name in self.delay_topics:
            for p, log in enumerate(self.topics.get(name, [])):
                tp = TopicPartition(name, p)
                for record in log[max(forwarded.get(tp, 0), self.first_offset(tp)) :]:
                    if (HEADER_TOPIC, wanted) in record.headers:
                        return True
        return False

    def flush(self, topic: str | int | None = None, *, timeout_ms: int | None = None) -> None:  # type: ignore[override]  # Dramatiq's flush(queue_name)
        """Drop every message of ``topic`` that was not fetched yet (Dramatiq's ``flush(queue)``).

        Offsets go on counting, as after Kafka's delete-records: the partitions' start moves to
        their end, so a live worker keeps consuming and the next message is delivered. Messages a
        worker already fetched still run. Without a topic there is nothing to do: the stub
        buffers no sends (the base broker's ``flush(timeout_ms)``).
        """
        if isinstance(topic, str):
            with self._cond:
                self._drop(topic)
                self._cond.notify_all()

    def flush_all(self) -> None:
        """Drop every message not yet fetched (delayed ones and dead letters included) and forget
        the dead letters; a live worker keeps running (see :meth:`flush`)."""
        with self._cond:
            for topic in list(self.topics):
                self._drop(topic)
            self._dead.clear()
            self._unraised.clear()
            self._cond.notify_all()

    def _drop(self, topic: str) -> None:
        for p, log in enumerate(self.topics.get(topic, [])):
            self.log_start[TopicPartition(topic, p)] = len(log)

    def first_offset(self, tp: TopicPartition) -> int:
        """The partition's first offset still held (0 until a flush)."""
        return self.log_start.get(tp, 0)


class StubConsumer:
    def __init__(self, broker: StubBroker, topics: list[str], group_id: str, listener: RebalanceListener) -> None:
        self.broker = broker
        self.topics = topics
        self.group_id = group_id
        self.listener = listener
        self.generation = -1
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.waiting = False  # some assigned partitions are still held by their previous owner
        self.follows_declarations = False  # its worker subscribes to topics declared later
        self.closed = False
        self._woken = False  # wakeup() was called: the poll under way (or the next one) returns at once

    def _rebalance_if_needed(self) -> None:
        b = self.broker
        with b._cond:
            generation = b._generation[self.group_id]
            if generation == self.generation and not self.waiting:
                return
            target = b._assignment(self)
        revoked = self.assigned - target
        if revoked:
            self._revoke(revoked)
        with b._cond:
            owners = b._owners.setdefault(self.group_id, {})
            wanted = target - self.assigned
            added = {tp for tp in wanted if owners.get(tp) in (None, self)}  # the rest: not revoked yet
            self.waiting = added != wanted
            committed = b.committed.get(self.group_id, {})
            for tp in added:
                owners[tp] = self
                self.positions[tp] = committed.get(tp, 0)
        self.assigned = (self.assigned & target) | added
        self.generation = generation
        if added:
            self.listener.on_partitions_assigned(added)

    def _revoke(self, partitions: set[TopicPartition]) -> None:
        revocation = self.listener.revoke_partitions(partitions)
        deadline = time.monotonic() + self.listener.revoke_timeout_s
        while revocation.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        offsets = revocation.offsets()
        self.commit(offsets)
        revocation.done(offsets)
        with self.broker._cond:
            owners = self.broker._owners.get(self.group_id, {})
            for tp in partitions:
                self.positions.pop(tp, None)
                self.paused.discard(tp)
                if owners.get(tp) is self:
                    del owners[tp]
            self.broker._cond.notify_all()

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        self._rebalance_if_needed()
        b = self.broker
        deadline = time.monotonic() + timeout_ms / 1000
        with b._cond:
            while True:
                out: list[Record] = []
                for tp in sorted(self.assigned - self.paused):
                    log = b.topics[tp.topic][tp.partition]
                    position = max(self.positions[tp], b.first_offset(tp))  # a flush dropped the rest
                    take = log[position : position + max_records - len(out)]
                    out.extend(take)
                    self.positions[tp] = position + len(take)
                    if len(out) >= max_records:
                        break
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self._woken or b._generation[self.group_id] != self.generation:
                    self._woken = False
                    return out
                if self.waiting:  # for a partition's previous owner to revoke it: look again soon
                    b._cond.wait(min(remaining, 0.01))
                    return out
                b._cond.wait(remaining)

    def commit(self, offsets: dict[TopicPartition, Commit]) -> None:
        with self.broker._cond:
            for tp, commit in offsets.items():
                self.broker.committed.setdefault(self.group_id, {})[tp] = commit.offset
                self.broker.commit_metadata.setdefault(self.group_id, {})[tp] = commit.metadata
            self.broker._cond.notify_all()

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Commit]:
        with self.broker._cond:
            offsets = self.broker.committed.get(self.group_id, {})
            metadata = self.broker.commit_metadata.get(self.group_id, {})
            return {tp: Commit(offsets[tp], metadata.get(tp, "")) for tp in partitions if tp in offsets}

    def topic_exists(self, topic: str) -> bool:
        return topic in self.broker.topics

    def subscribe(self, topics: Iterable[str]) -> None:
        """Change the subscription (a worker following the declared topics): a rebalance."""
        with self.broker._cond:
            self.topics = list(topics)
            for t in self.topics:
                self.broker._topic(t)
            self.broker._generation[self.group_id] += 1
            self.broker._cond.notify_all()

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp in self.assigned:
            self.positions[tp] = offset

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.paused.update(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.paused.difference_update(partitions)

    def wakeup(self) -> None:
        """Make a poll blocked in another thread return now (Kafka's ``consumer.wakeup()``, without
        its exception): the thread stopping a forwarder or worker does not wait out a poll timeout."""
        with self.broker._cond:
            self._woken = True
            self.broker._cond.notify_all()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.broker._leave(self)
