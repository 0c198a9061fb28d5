"""Every use of kafka-python's private internals, in one place, checked before a consumer runs.

kafka-python 3.0.12 leaves three things without a public way to do them:

* an ``AsyncConsumerRebalanceListener`` runs on the consumer's IO loop, where any blocking call
  raises ``RuntimeError``; waiting for running messages and committing there needs the loop's own
  awaitable ``sleep`` (``consumer._net.sleep``) and the coordinator's awaitable commit
  (``consumer._coordinator._commit_offsets_sync_async``);
* a fetcher bug: records parked for a paused partition are restored only when
  ``consumer._fetcher._next_partition_records is None``, but an exhausted batch leaves it falsy
  and not None, so a resumed partition never fetches again (see :func:`unstick_parked_records`);
* ``poll()`` fetches nothing while the member takes part in a rebalance, even under the
  cooperative protocol, whose point is that the partitions a member keeps go on being worked
  (Java's consumer keeps fetching them). A cooperative rebalance has two rounds, and each waits
  for the slowest member's next heartbeat, so the whole group stood still for about a heartbeat
  interval whenever a member joined. :func:`fetch_while_rejoining` fetches the partitions still
  owned meanwhile (``consumer._fetcher.fetch_records``; the coordinator's
  ``_rebalance_protocol`` and ``need_rejoin()``).

These names can change in any release, and a silent change would degrade the worker (a stalled
partition, a rebalance that commits nothing). So the version is pinned (``requirements.txt``),
:func:`check_library` runs when a Kafka consumer is built and :func:`check_consumer` right after,
and either fails with :class:`KafkaInternalsError` naming what is missing: never a fallback.
Covered by ``tests/broker/test_kafka_internals.py`` and by the rebalance and backpressure tests
in ``tests/broker/test_worker.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

import kafka.version
from kafka.coordinator.assignors.abstract import RebalanceProtocol
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from broker.errors import BrokerError

PINNED_VERSION = "3.0.12"


class KafkaInternalsError(BrokerError):
    """The installed kafka-python lacks an internal this package relies on (or is another version)."""


def check_library(version: str | None = None) -> None:
    """Fail unless the installed kafka-python is the pinned version with the coordinator method we await."""
    version = kafka.version.__version__ if version is None else version
    if version != PINNED_VERSION:
        raise KafkaInternalsError(
            f"kafka-python {version} is installed, but broker/brokers/kafka/internals.py was checked against "
            f"{PINNED_VERSION} only: install kafka-python=={PINNED_VERSION}, or re-check the private attributes "
            "it lists for the new version and update PINNED_VERSION"
        )
    method = getattr(ConsumerCoordinator, "_commit_offsets_sync_async", None)
    if method is None or not inspect.iscoroutinefunction(method):
        raise KafkaInternalsError(
            "kafka-python's ConsumerCoordinator._commit_offsets_sync_async (an awaitable commit) is missing"
        )


def check_consumer(consumer: Any) -> None:
    """Fail unless ``consumer`` (a built ``KafkaConsumer``) has every private attribute used here."""
    missing = []
    net = getattr(consumer, "_net", None)
    if net is None or not callable(getattr(net, "sleep", None)):
        missing.append("_net.sleep")
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not callable(getattr(coordinator, "_commit_offsets_sync_async", None)):
        missing.append("_coordinator._commit_offsets_sync_async")
    if coordinator is None or not hasattr(coordinator, "_rebalance_protocol"):
        missing.append("_coordinator._rebalance_protocol")
    if coordinator is None or not callable(getattr(coordinator, "need_rejoin", None)):
        missing.append("_coordinator.need_rejoin")
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_next_partition_records"):
        missing.append("_fetcher._next_partition_records")
    if fetcher is None or not callable(getattr(fetcher, "fetch_records", None)):
        missing.append("_fetcher.fetch_records")
    if missing:
        raise KafkaInternalsError(
            f"this kafka-python's KafkaConsumer lacks {', '.join('KafkaConsumer.' + m for m in missing)}, "
            "which the worker needs (see broker/brokers/kafka/internals.py)"
        )


async def sleep(consumer: Any, seconds: float) -> None:
    """Sleep on the consumer's IO loop (inside a rebalance listener), letting heartbeats flow."""
    await consumer._net.sleep(seconds)


async def commit(consumer: Any, offsets: dict[KafkaTopicPartition, OffsetAndMetadata]) -> None:
    """Commit synchronously from inside a rebalance listener (on the IO loop). Raises KafkaError."""
    await consumer._coordinator._commit_offsets_sync_async(offsets)


def unstick_parked_records(consumer: Any) -> None:
    """Work around the kafka-python 3.0.12 fetcher bug described above, before every poll.

    Clearing the exhausted batch lets the fetcher restore parked records. Runs on the consumer
    thread, the thread that uses this field inside ``poll()``. The backpressure tests in
    ``tests/broker/test_worker.py`` fail without it.
    """
    fetcher = consumer._fetcher
    current = fetcher._next_partition_records
    if current is not None and not current:
        fetcher._next_partition_records = None


def fetch_while_rejoining(consumer: Any, max_records: int, timeout_ms: int) -> dict[Any, list[Any]]:
    """Records of the partitions this member still owns, fetched while a cooperative rebalance
    is under way (``poll()`` returns none then; see the module docstring). Empty otherwise."""
    coordinator = consumer._coordinator
    if coordinator._rebalance_protocol != RebalanceProtocol.COOPERATIVE or not coordinator.need_rejoin():
        return {}
    if not consumer.assignment():
        return {}
    records: dict[Any, list[Any]]
    records, _ = consumer._fetcher.fetch_records(max_records, update_offsets=True, timeout_ms=timeout_ms)
    return records
