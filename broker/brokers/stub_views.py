"""Dramatiq's views of a :class:`~broker.brokers.stub.StubBroker`: ``broker.queues[name]`` (a
topic seen as a queue) and ``broker.dead_letters_by_queue`` (its dead letters by topic).

Apart from the broker itself because they only read it (under its lock) for tests written
against Dramatiq's stub, while ``stub.py`` is the in-memory Kafka the worker runs on.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Mapping, MutableSequence
from typing import TYPE_CHECKING, Any, overload

from broker.consumer import TopicPartition
from broker.errors import DecodeError
from broker.message import Message

if TYPE_CHECKING:
    from broker.brokers.stub import StubBroker


class TopicQueue:
    """One topic seen as Dramatiq's stub saw a queue, for tests that look at what was sent.

    A Kafka topic is a log that groups read, not a queue that is emptied, so: :meth:`put` writes
    a record as any producer would; :meth:`get` reads the next record (in the order written)
    without taking it from the workers' groups; :meth:`qsize` counts the records the groups
    consuming the topic have not fetched yet and :attr:`unfinished_tasks` those they have not
    committed (with no group yet, every record held). ``flush`` drops both to 0.
    """

    def __init__(self, broker: StubBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic

    def put(self, data: bytes, block: bool = True, timeout: float | None = None) -> None:
        """Write ``data`` (a message's :meth:`~broker.message.Message.encode`, or any bytes) to the
        topic; keyed by the message's key when the bytes are a message, as ``send`` would key it."""
        try:
            key = Message.decode(data).key
        except DecodeError:
            key = None
        self.broker._append(self.topic, None if key is None else key.encode("utf-8"), bytes(data), [])

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """The value of the next record not read by this view yet, waiting up to ``timeout``
        seconds (``queue.Queue``'s arguments). Raises ``queue.Empty``."""
        b = self.broker
        deadline = None if timeout is None else time.monotonic() + timeout
        with b._cond:
            while True:
                heads = []
                for p, log in enumerate(b._topic(self.topic)):
                    tp = TopicPartition(self.topic, p)
                    at = max(b._read.get(tp, 0), b.first_offset(tp))
                    if at < len(log):
                        heads.append((log[at].timestamp_ms, p, at, tp))
                if heads:
                    _, p, at, tp = min(heads)
                    b._read[tp] = at + 1
                    return b.topics[self.topic][p][at].value
                remaining = None if deadline is None else deadline - time.monotonic()
                if not block or (remaining is not None and remaining <= 0):
                    raise queue.Empty
                b._cond.wait(remaining)

    def get_nowait(self) -> bytes:
        return self.get(block=False)

    def qsize(self) -> int:
        return self._behind(fetched=True)

    def empty(self) -> bool:
        return self.qsize() == 0

    @property
    def unfinished_tasks(self) -> int:
        return self._behind(fetched=False)

    def _behind(self, *, fetched: bool) -> int:
        """Records held that the most-behind group consuming the topic has not fetched (or not
        committed); with no group, all records held."""
        b = self.broker
        with b._cond:
            groups = {g: ms for g, ms in b._members.items() if any(self.topic in m.topics for m in ms)}
            total = 0
            for p, log in enumerate(b._topic(self.topic)):
                tp = TopicPartition(self.topic, p)
                start = b.first_offset(tp)
                done = [b.committed.get(g, {}).get(tp, 0) for g in groups]
                if fetched:
                    done = [
                        max([d, *(m.positions.get(tp, 0) for m in groups[g] if tp in m.assigned)])
                        for d, g in zip(done, groups, strict=True)
                    ]
                total += len(log) - max(start, min(done, default=start))
            return total


class _Queues(Mapping[str, TopicQueue]):
    def __init__(self, broker: StubBroker) -> None:
        self.broker = broker

    def _names(self) -> set[str]:
        return set(self.broker.topics) | self.broker.get_declared_topics()

    def __getitem__(self, topic: str) -> TopicQueue:
        if topic not in self._names():
            raise KeyError(topic)
        return TopicQueue(self.broker, topic)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())


class _DeadLettersByTopic(Mapping[str, "_TopicDeadLetters"]):
    def __init__(self, broker: StubBroker) -> None:
        self.broker = broker

    def __getitem__(self, topic: str) -> _TopicDeadLetters:
        return _TopicDeadLetters(self.broker, topic)  # any topic: empty until one is dead-lettered (a defaultdict)

    def __iter__(self) -> Iterator[str]:
        with self.broker._cond:
            return iter(dict.fromkeys(topic for topic, _ in self.broker._dead))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _TopicDeadLetters(MutableSequence[Any]):
    """The dead letters of one topic; changing it changes the broker's :attr:`StubBroker.dead_letters`."""

    def __init__(self, broker: StubBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic

    def _indexes(self) -> list[int]:
        return [i for i, (topic, _) in enumerate(self.broker._dead) if topic == self.topic]

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        with self.broker._cond:
            letters = [self.broker._dead[i][1] for i in self._indexes()]
        return letters[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        with self.broker._cond:
            self.broker._dead[self._indexes()[index]] = (self.topic, value)

    def __delitem__(self, index: int | slice) -> None:
        with self.broker._cond:
            chosen = self._indexes()[index]
            for i in sorted(chosen if isinstance(chosen, list) else [chosen], reverse=True):
                del self.broker._dead[i]

    def __len__(self) -> int:
        with self.broker._cond:
            return len(self._indexes())

    def insert(self, index: int, value: Any) -> None:
        with self.broker._cond:
            indexes = self._indexes()
            at = indexes[index] if index < len(indexes) else len(self.broker._dead)
            self.broker._dead.insert(at, (self.topic, value))

    def __eq__(self, other: object) -> bool:
        return list(self) == other
