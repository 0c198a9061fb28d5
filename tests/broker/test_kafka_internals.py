"""The start-up check of kafka-python's private internals: the real library passes it, and
a different version or a missing attribute fails loudly, naming what is wrong."""

from __future__ import annotations

import types

import pytest
from kafka import KafkaConsumer
from kafka.coordinator.consumer import ConsumerCoordinator

from broker.brokers.kafka import internals
from broker.brokers.kafka.internals import KafkaInternalsError, check_consumer, check_library


def test_the_installed_kafka_python_passes_the_check():
    check_library()
    # api_version given: the consumer is built without reaching a broker (nothing listens on port 1)
    consumer = KafkaConsumer(bootstrap_servers="127.0.0.1:1", api_version=(3, 9))
    try:
        check_consumer(consumer)
    finally:
        consumer.close()


def test_another_version_is_refused_with_the_pinned_one_named():
    with pytest.raises(KafkaInternalsError, match=r"kafka-python 3\.1\.0 is installed.*3\.0\.12"):
        check_library("3.1.0")


def test_a_missing_coordinator_method_is_refused(monkeypatch):
    monkeypatch.delattr(ConsumerCoordinator, "_commit_offsets_sync_async")
    with pytest.raises(KafkaInternalsError, match="_commit_offsets_sync_async"):
        check_library()


def test_a_consumer_without_the_private_attributes_is_refused_naming_each():
    with pytest.raises(KafkaInternalsError) as caught:
        check_consumer(types.SimpleNamespace(_net=types.SimpleNamespace(), _fetcher=types.SimpleNamespace()))
    message = str(caught.value)
    for name in ("_net.sleep", "_coordinator._commit_offsets_sync_async", "_fetcher._next_partition_records"):
        assert name in message


class _Exhausted:
    def __bool__(self) -> bool:
        return False


@pytest.mark.parametrize(
    "current, expected_cleared",
    [(None, False), (_Exhausted(), True), ("a batch with records left", False)],
)
def test_only_an_exhausted_batch_is_cleared_before_a_poll(current, expected_cleared):
    consumer = types.SimpleNamespace(_fetcher=types.SimpleNamespace(_next_partition_records=current))
    internals.unstick_parked_records(consumer)
    if expected_cleared:
        assert consumer._fetcher._next_partition_records is None
    else:
        assert consumer._fetcher._next_partition_records is current
