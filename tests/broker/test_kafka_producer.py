"""The Kafka producer repairs itself: a producer that failed for good is replaced, a record too
large is the message's fault and leaves the producer working, and health() tells the truth."""

from __future__ import annotations

import os

import pytest
from kafka.errors import KafkaTimeoutError

from broker import BrokerUnavailable, KafkaBroker, MessageTooLarge, actor

pytestmark = pytest.mark.stack


@pytest.fixture
def kafka_broker(settings, make_topic):
    broker = KafkaBroker(**settings.kafka_options, send_timeout_ms=5000)
    broker.topic = make_topic(partitions=1)
    yield broker
    broker.close()


def test_a_producer_that_failed_for_good_is_rebuilt_and_the_next_send_goes_through(kafka_broker):
    @actor(broker=kafka_broker, topic=kafka_broker.topic)
    def note(n):
        pass

    note.send(1)
    first = kafka_broker._producer
    first.close(timeout=1)  # what a fatal error leaves behind: a producer that never sends again
    with pytest.raises(BrokerUnavailable, match="already closed"):
        note.send(2)
    assert note.send(3)  # a fresh producer
    assert kafka_broker._producer is not first


def test_a_record_too_large_is_the_messages_fault_and_the_producer_keeps_working(kafka_broker):
    @actor(broker=kafka_broker, topic=kafka_broker.topic)
    def blob(data):
        pass

    producer = blob.send("small") and kafka_broker._producer
    with pytest.raises(MessageTooLarge):
        blob.send("x" * 2_000_000)
    assert blob.send("small again") and kafka_broker._producer is producer
    assert kafka_broker.health() == (True, "ok")


def test_health_is_failing_while_sends_fail_and_fine_once_one_is_acknowledged(kafka_broker):
    @actor(broker=kafka_broker, topic=kafka_broker.topic)
    def note(n):
        pass

    note.send(1)
    assert kafka_broker.health() == (True, "ok")
    kafka_broker._translate(KafkaTimeoutError("a send timed out"), kafka_broker._producer, "a send")
    ok, detail = kafka_broker.health()
    assert not ok and "sends failing" in detail
    note.send(2)
    assert kafka_broker.health() == (True, "ok")


def test_health_without_a_reachable_broker_says_so():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    ok, detail = broker.health()
    assert not ok and "nothing answers at 127.0.0.1:1" in detail


def test_health_names_a_failed_tls_handshake():
    port = os.environ.get("KAFKA_SASL_PORT", "9094")  # the stack's TLS listener, its CA not given here
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL")
    ok, detail = broker.health()
    assert not ok and "TLS handshake" in detail and "check ssl_cafile" in detail
