"""The worker's group consumer on kafka-python: :class:`KafkaGroupConsumer` and the rebalance
listener that runs on kafka-python's IO loop. Built by ``KafkaBroker.consume``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import MemberToRemove
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from broker.brokers.kafka import internals
from broker.consumer import Commit, RebalanceListener, Record, TopicPartition
from broker.errors import BrokerUnavailable

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_MS = 300  # kafka-python's 3 s stalled every join for seconds (consumer_options overrides)

# The partition assignors a group may use: KIP-429's incremental one, or kafka-python's eager ones.
ASSIGNORS = {
    "cooperative-sticky": CooperativeStickyAssignor,
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}

# Bounds on the consumer's last steps, so a drain fits a container's stop timeout: shutdown
# timeout + COMMIT_TIMEOUT_MS + CLOSE_TIMEOUT_MS + the producer's send timeout (docs/operations.md).
COMMIT_TIMEOUT_MS = 10_000
CLOSE_TIMEOUT_MS = 10_000


class _ListenerAdapter(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's IO loop: must await, never block, so heartbeats keep flowing."""

    def __init__(self, consumer: KafkaGroupConsumer, listener: RebalanceListener) -> None:
        self.consumer = consumer
        self.listener = listener

    async def on_partitions_assigned(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        # kafka-python keeps the paused flag of partitions that stay assigned across a rebalance,
        # but the worker starts each assignment afresh (unpaused): make the two agree.
        assigned = list(assigned)
        if assigned:
            self.consumer.kafka.resume(*assigned)
        self.listener.on_partitions_assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned})

    async def on_partitions_revoked(self, revoked: Iterable[KafkaTopicPartition]) -> None:
        revocation = self.listener.revoke_partitions({TopicPartition(tp.topic, tp.partition) for tp in revoked})
        kafka = self.consumer.kafka
        deadline = time.monotonic() + self.listener.revoke_timeout_s
        while revocation.busy() and time.monotonic() < deadline:
            await internals.sleep(kafka, 0.05)
        offsets = revocation.offsets()
        committed: dict[TopicPartition, Commit] = {}
        if offsets:
            try:
                await internals.commit(kafka, _kafka_offsets(offsets))
                committed = offsets
            except KafkaError as exc:  # the next owner re-reads from the last commit: duplicates, no loss
                log.warning("commit on revocation failed", extra={"error": str(exc)})
        # kafka-python keeps the fetch position of partitions that stay assigned; rewind them past
        # nothing the worker has not finished. Under the cooperative protocol the revoked
        # partitions have already left the assignment (and seeking one raises): only those that
        # stay are rewound, and under it none of them was revoked, so there is nothing to rewind.
        still_assigned = self.consumer.kafka.assignment()
        for (topic, partition), offset in revocation.resume_positions().items():
            tp = KafkaTopicPartition(topic, partition)
            if tp in still_assigned:
                self.consumer.kafka.seek(tp, offset)
        revocation.done(committed)

    async def on_partitions_lost(self, lost: Iterable[KafkaTopicPartition]) -> None:
        self.listener.on_partitions_lost({TopicPartition(tp.topic, tp.partition) for tp in lost})


def _kafka_offsets(offsets: dict[TopicPartition, Commit]) -> dict[KafkaTopicPartition, OffsetAndMetadata]:
    return {KafkaTopicPartition(t, p): OffsetAndMetadata(c.offset, c.metadata, -1) for (t, p), c in offsets.items()}


class KafkaGroupConsumer:
    """The worker's :class:`~broker.consumer.Consumer` on a kafka-python ``KafkaConsumer``.

    With a ``group_instance_id`` the member is static (KIP-345): Kafka keeps its partitions for it
    through a crash until the session times out, and a restart with the same id within that time
    takes them back without a rebalance. A static member never sends LeaveGroup on close, so a
    deliberate stop (:meth:`close`: SIGTERM, scale-in) removes it from the group explicitly:
    otherwise its partitions would stand still for a whole session timeout.
    """

    def __init__(
        self,
        topics: list[str],
        listener: RebalanceListener,
        options: dict[str, Any],
        connection: dict[str, Any] | None = None,
    ) -> None:
        """``options``: the ``KafkaConsumer``'s; ``connection``: how to reach the cluster (as
        :func:`~broker.brokers.kafka.broker.client_options`), for leaving the group as a static member."""
        internals.check_library()
        self.group_id: str = options["group_id"]
        self.instance_id: str | None = options.get("group_instance_id")
        self._connection = connection or {"bootstrap_servers": options["bootstrap_servers"]}
        self.kafka = KafkaConsumer(**options)
        try:
            internals.check_consumer(self.kafka)
            self._adapter = _ListenerAdapter(self, listener)
            # subscribe takes an AsyncConsumerRebalanceListener too; the stubs name only the sync one
            self.kafka.subscribe(topics, listener=self._adapter)  # type: ignore[arg-type]
            self._await_metadata(topics, timeout_s=options["bootstrap_timeout_ms"] / 1000)
        except BaseException:
            self.kafka.close(autocommit=False)
            raise

    def _await_metadata(self, topics: list[str], timeout_s: float) -> None:
        """Know every topic's partitions before joining (the first poll joins): if this member
        becomes the group's leader, it assigns from its own metadata, and a topic missing there gets
        no consumer at all. After ``subscribe``, so the group's metadata snapshot is built from it
        (before it, the snapshot stays empty and the next refresh forces a needless rebalance)."""
        deadline = time.monotonic() + timeout_s
        missing = list(topics)
        while True:
            missing = [t for t in missing if not self.kafka.partitions_for_topic(t)]
            if not missing:
                return
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"no partitions known for topic(s) {', '.join(missing)}: do they exist?")
            time.sleep(0.2)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        internals.unstick_parked_records(self.kafka)
        try:
            batches = self.kafka.poll(timeout_ms=timeout_ms, max_records=max_records)
            if not batches:  # a cooperative rebalance: the partitions kept are worked meanwhile
                batches = internals.fetch_while_rejoining(self.kafka, max_records, timeout_ms)
        except KafkaError as exc:
            raise BrokerUnavailable(f"poll failed: {exc}") from exc
        records: list[Record] = []
        for batch in batches.values():
            records.extend(
                Record(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or ()), r.timestamp)
                for r in batch
            )
        return records

    def commit(self, offsets: dict[TopicPartition, Commit]) -> None:
        try:
            self.kafka.commit(_kafka_offsets(offsets), timeout_ms=COMMIT_TIMEOUT_MS)
        except KafkaError as exc:
            raise BrokerUnavailable(f"offset commit failed: {exc}") from exc

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Commit]:
        """The group's last commits (one OffsetFetch per partition, once per assignment)."""
        out: dict[TopicPartition, Commit] = {}
        try:
            for tp in partitions:
                found = self.kafka.committed(KafkaTopicPartition(*tp), metadata=True, timeout_ms=COMMIT_TIMEOUT_MS)
                if found is not None and found.offset is not None and found.offset >= 0:
                    out[tp] = Commit(found.offset, found.metadata or "")
        except KafkaError as exc:
            raise BrokerUnavailable(f"reading committed offsets failed: {exc}") from exc
        return out

    def topic_exists(self, topic: str) -> bool:
        try:
            topics = self.kafka.topics()  # asks the cluster (not the cached metadata)
        except KafkaError:
            return True  # no answer: not known to be missing
        return topic in topics

    def subscribe(self, topics: list[str]) -> None:
        """Change the subscription (a worker following its broker's declared topics): the next
        poll rejoins the group with it."""
        try:
            self.kafka.subscribe(topics, listener=self._adapter)  # type: ignore[arg-type]  # as in __init__
        except KafkaError as exc:
            raise BrokerUnavailable(f"subscribing to {', '.join(topics)} failed: {exc}") from exc

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.kafka.seek(KafkaTopicPartition(*tp), offset)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        tps = [KafkaTopicPartition(t, p) for t, p in partitions]
        if tps:
            self.kafka.pause(*tps)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        tps = [KafkaTopicPartition(t, p) for t, p in partitions]
        if tps:
            self.kafka.resume(*tps)

    def close(self) -> None:
        self.kafka.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
        if self.instance_id is not None:
            self._leave_static()

    def _leave_static(self) -> None:
        """Remove this static member from its group now (what LeaveGroup does for a dynamic one)."""
        try:
            admin = KafkaAdminClient(**self._connection, request_timeout_ms=CLOSE_TIMEOUT_MS)
        except KafkaError as exc:
            log.warning("could not leave the group as a static member", extra={"error": str(exc)})
            return
        try:
            member = MemberToRemove(group_instance_id=self.instance_id, reason="worker stopped")
            admin.remove_group_members(self.group_id, [member])
        except KafkaError as exc:  # e.g. already fenced or expired: nothing left to leave
            log.warning("could not leave the group as a static member", extra={"error": str(exc)})
        finally:
            admin.close()
