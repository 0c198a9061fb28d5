"""kafka-python's errors, translated into this library's where they enter (as Dramatiq does).

Callers of the Kafka broker and of :mod:`broker.brokers.kafka.admin` catch
:class:`~broker.errors.BrokerError` and its subclasses only; no ``KafkaError`` leaves this package.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from broker.errors import BrokerUnavailable

P = ParamSpec("P")
T = TypeVar("T")

# The record is too large for the producer (max_request_size) or the broker (message.max.bytes).
TOO_LARGE = (kafka_errors.MessageSizeTooLargeError,)
# Errors after which a producer never sends again: rebuild it.
FATAL = (
    kafka_errors.IllegalStateError,
    kafka_errors.ProducerFencedError,
    kafka_errors.OutOfOrderSequenceNumberError,
    kafka_errors.UnknownProducerIdError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.ClusterAuthorizationFailedError,
)


def unavailable(exc: KafkaError) -> BrokerUnavailable:
    """A Kafka error that no step named more precisely (a coordinator not ready yet, a node
    away): Kafka did not answer, in the words the console and the operator commands show."""
    return BrokerUnavailable(f"{type(exc).__name__}: {exc}")


def translated(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` with any ``KafkaError`` it lets out raised as :class:`BrokerUnavailable` instead."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except KafkaError as exc:
            raise unavailable(exc) from exc

    return call


def translated_iterator(fn: Callable[P, Iterator[T]]) -> Callable[P, Iterator[T]]:
    """:func:`translated` for a generator: the errors come while it is iterated, not when called."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        try:
            yield from fn(*args, **kwargs)
        except KafkaError as exc:
            raise unavailable(exc) from exc

    return call
