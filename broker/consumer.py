"""What the worker needs from a broker's consumer, so Kafka and the in-memory stub share one worker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Commit(NamedTuple):
    """What to commit for a partition: the next offset to read, and the finished offsets beyond it
    (their encoding is :mod:`broker.offsets`)."""

    offset: int
    metadata: str = ""


class Record(NamedTuple):
    """One consumed record, as the broker stored it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class Revoking(Protocol):
    """What a listener hands back for the partitions it gives up, for the consumer to follow: the
    worker's :class:`~broker.offsets.Revocation`, or the delay forwarder's (nothing in flight)."""

    def busy(self) -> bool: ...

    def offsets(self) -> dict[TopicPartition, Commit]: ...

    def resume_positions(self) -> dict[TopicPartition, int]: ...

    def done(self, committed: dict[TopicPartition, Commit]) -> None: ...


class RebalanceListener(Protocol):
    """Implemented by the worker; called by consumers during rebalances.

    On revocation a consumer calls :meth:`revoke_partitions` and follows the returned
    :class:`Revoking` (wait while busy, up to ``revoke_timeout_s``; commit; rewind; done). Lost
    partitions are already owned by another member: nothing is committed.
    """

    revoke_timeout_s: float

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None: ...

    def revoke_partitions(self, partitions: set[TopicPartition]) -> Revoking: ...

    def on_partitions_lost(self, partitions: set[TopicPartition]) -> None: ...


class Consumer(Protocol):
    """A group member. Used from one thread only (the worker's consumer thread)."""

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]: ...

    def commit(self, offsets: dict[TopicPartition, Commit]) -> None:
        """Commit the *next* offset to read for each partition, with its metadata; synchronous."""

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Commit]:
        """The group's last commit for each assigned partition that has one."""

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Fetch ``tp`` from ``offset`` next (records fetched beyond it are read again)."""

    def topic_exists(self, topic: str) -> bool:
        """Whether the cluster has ``topic`` (from fresh metadata; False only when it answered so)."""

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def close(self) -> None:
        """Leave the group without committing anything more."""
