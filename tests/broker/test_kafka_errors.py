"""No ``KafkaError`` leaves ``broker/brokers/kafka/``: what a caller sees is the library's own
``BrokerUnavailable``, with the Kafka error as its cause."""

from __future__ import annotations

import inspect

import pytest
from kafka.errors import KafkaTimeoutError, NodeNotReadyError

from broker.brokers.kafka import admin
from broker.brokers.kafka.errors import translated, translated_iterator
from broker.errors import BrokerUnavailable


def test_a_kafka_error_leaves_a_translated_function_as_broker_unavailable():
    @translated
    def describe() -> None:
        raise NodeNotReadyError("node 1")

    with pytest.raises(BrokerUnavailable, match=r"^NodeNotReadyError: ") as raised:
        describe()
    assert isinstance(raised.value.__cause__, NodeNotReadyError)


def test_other_errors_pass_a_translated_function_unchanged():
    @translated
    def broken() -> None:
        raise ValueError("not Kafka's")

    with pytest.raises(ValueError, match="not Kafka's"):
        broken()


def test_a_generator_is_translated_while_it_is_iterated_and_starts_only_then():
    started = []

    @translated_iterator
    def records():
        started.append(True)
        yield 1
        raise KafkaTimeoutError("late")

    iterator = records()
    assert started == []  # a reader connects when iterated, as before
    assert next(iterator) == 1
    with pytest.raises(BrokerUnavailable, match=r"^KafkaTimeoutError: "):
        next(iterator)


def test_every_public_operator_tool_is_translated():
    tools = {
        name: fn
        for name, fn in vars(admin).items()
        if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == admin.__name__
    }
    assert "consumer_lag" in tools and "read_dead_letters" in tools
    assert [name for name, fn in tools.items() if not hasattr(fn, "__wrapped__")] == []
