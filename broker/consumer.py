"""What the worker needs from a broker's consumer, so Kafka and the in-memory stub share one worker."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol


class TopicPartition(NamedTuple):
    topic: str
    partition: int


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


class Revocation(Protocol):
    def busy(self) -> bool:
        """True while messages of the revoked partitions are still running."""

    def offsets(self) -> dict[TopicPartition, int]:
        """What to commit for the revoked partitions (next offsets to read)."""

    def resume_positions(self) -> dict[TopicPartition, int]:
        """The first unfinished offset of each revoked partition, to fetch from if it comes back."""

    def done(self, committed: dict[TopicPartition, int]) -> None:
        """Forget the partitions; ``committed`` is what was actually committed."""


class RebalanceListener(Protocol):
    """Implemented by the worker; called by consumers during rebalances.

    On revocation a consumer calls :meth:`revoke_partitions`, waits (without blocking its
    heartbeats) while ``busy()`` up to ``revoke_timeout_s``, commits ``offsets()``, moves its
    fetch positions back to ``resume_positions()`` (a partition that stays with this member must
    not skip records the worker dropped) and calls ``done()``. Lost partitions are already
    owned by another member: nothing is committed.
    """

    revoke_timeout_s: float

    def on_partitions_assigned(self, partitions: set[TopicPartition]) -> None: ...

    def revoke_partitions(self, partitions: set[TopicPartition]) -> Revocation: ...

    def on_partitions_lost(self, partitions: set[TopicPartition]) -> None: ...


class Consumer(Protocol):
    """A group member. Used from one thread only (the worker's consumer thread)."""

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]: ...

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the *next* offset to read for each partition; synchronous."""

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def close(self) -> None:
        """Leave the group without committing anything more."""
