"""Broker fixtures. ``env`` runs a test twice: on the in-memory StubBroker and on real Kafka,
each time with its own topic, dead-letter topic and consumer group."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from kafka import KafkaAdminClient

from broker import KafkaBroker, StubBroker, Worker
from broker.brokers.kafka.admin import read_dead_letters
from broker.consumer import TopicPartition
from broker.dead_letters import describe_dead_letter
from broker.delays import tier_topics


@dataclass
class BrokerEnv:
    kind: str
    broker: StubBroker | KafkaBroker
    topic: str
    group: str
    admin: KafkaAdminClient | None = None
    workers: list[Worker] = field(default_factory=list)
    has_delay_topics: bool = False

    def start_worker(self, **options) -> Worker:
        options.setdefault("worker_threads", 4)
        options.setdefault("commit_interval_ms", 50)
        if self.kind == "stub":  # an idle poll wakes for new records (and stop()), not for a commit due: short
            options.setdefault("poll_timeout_ms", 20)
        # on Kafka the delay topics exist only for tests that ask for them (the delay_env fixture)
        options.setdefault("forward_delays", self.kind == "stub" or self.has_delay_topics)
        worker = Worker(self.broker, group_id=self.group, topics=[self.topic], **options)
        worker.start()
        self.workers.append(worker)
        return worker

    def dead_letters(self) -> list[dict]:
        """Each dead letter's metadata, plus its key and raw value."""
        if isinstance(self.broker, StubBroker):
            records = [d.record for d in self.broker.dead_letters]
        else:
            records = list(read_dead_letters(self.broker.client_options, self.broker.dead_letter_topic, timeout_s=10))
        return [{**describe_dead_letter(r), "raw_key": r.key, "raw_value": r.value} for r in records]

    def committed(self) -> dict[int, int]:
        """The group's committed offset per partition of the topic."""
        if isinstance(self.broker, StubBroker):
            offsets = self.broker.committed.get(self.group, {})
            return {tp.partition: o for tp, o in offsets.items() if tp.topic == self.topic}
        assert self.admin is not None  # on Kafka
        offsets = self.admin.list_group_offsets({self.group: None}).get(self.group, {})
        return {tp.partition: m.offset for tp, m in offsets.items() if tp.topic == self.topic}

    def end_offsets(self) -> dict[int, int]:
        if isinstance(self.broker, StubBroker):
            return {p: len(log) for p, log in enumerate(self.broker.topics.get(self.topic, []))}
        from kafka.admin import OffsetSpec
        from kafka.structs import TopicPartition as KTP

        specs = {KTP(self.topic, p): OffsetSpec.LATEST for p in range(3)}
        assert self.admin is not None  # on Kafka
        return {tp.partition: o.offset for tp, o in self.admin.list_partition_offsets(specs).items()}

    def produce_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Put bytes on the topic that did not come from an actor (a foreign or broken producer)."""
        self.broker.produce(self.topic, key, value, [])(10)


@pytest.fixture(params=["stub", pytest.param("kafka", marks=pytest.mark.stack)])
def env(request, settings, unique) -> Iterator[BrokerEnv]:
    group = f"test-group-{unique}"
    if request.param == "stub":
        broker: StubBroker | KafkaBroker = StubBroker(partitions=3, dead_letter_topic=f"dlq-{unique}")
        result = BrokerEnv("stub", broker, f"topic-{unique}", group)
    else:  # the Kafka fixtures are asked for here, so the stub variant needs no server
        make_topic = request.getfixturevalue("make_topic")
        kafka_admin = request.getfixturevalue("kafka_admin")
        topic = make_topic(partitions=3)
        dlq = make_topic(partitions=3, name=f"dlq-{unique}")
        broker = KafkaBroker(**settings.kafka_options, dead_letter_topic=dlq, send_timeout_ms=10000)
        result = BrokerEnv("kafka", broker, topic, group, admin=kafka_admin)
    yield result
    for worker in result.workers:
        worker.stop(timeout_ms=5000)
    broker.close()


@pytest.fixture
def delay_env(env: BrokerEnv, request, unique) -> BrokerEnv:
    """``env`` with delay topics of its own (on Kafka: seven fresh topics, one per tier)."""
    prefix = f"delays-{unique}"
    if env.kind == "kafka":
        make_topic = request.getfixturevalue("make_topic")
        for name in tier_topics(prefix):
            make_topic(partitions=2, name=name)
    env.broker.delay_prefix = prefix
    env.has_delay_topics = True
    return env


__all__ = ["BrokerEnv", "TopicPartition"]
