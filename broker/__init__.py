"""A small Dramatiq-style task library over Apache Kafka.

    from broker import actor, KafkaBroker, set_broker, Worker

    @actor(topic="orders", max_retries=3, key=lambda order: order["customer"])
    def ship(order: dict) -> None: ...

    set_broker(KafkaBroker(bootstrap_servers="127.0.0.1:9092", dead_letter_topic="orders-dlq"))
    ship.send({"customer": "c1", "items": [42]})     # returns once Kafka acknowledged it

This package imports nothing from the application (no Flask, no ``app``, no ``tasks``). Nor does
``import broker`` import kafka-python: :class:`KafkaBroker` is loaded when first named (so a
process that patches gevent, or uses only the stub, decides when kafka-python arrives).
"""

from typing import TYPE_CHECKING

from broker.actor import Actor, Call, actor
from broker.broker import Broker, SendFuture, get_broker, set_broker
from broker.brokers.stub import StubBroker
from broker.composition import group, pipeline
from broker.encoder import Encoder, JSONEncoder, get_encoder, set_encoder
from broker.errors import (
    ActorNotFound,
    BrokerError,
    BrokerUnavailable,
    DecodeError,
    DuplicateActor,
    EncodeError,
    Interrupt,
    MessageTooLarge,
    NoBrokerConfigured,
    QueueJoinTimeout,
    QueueNotFound,
    RateLimitExceeded,
    Retry,
    TimeLimitExceeded,
)
from broker.generic import GenericActor
from broker.lazy import lazy_attributes
from broker.message import Message
from broker.middleware import Middleware
from broker.proxy import MessageProxy
from broker.worker import Worker

if TYPE_CHECKING:
    from broker.brokers.kafka import KafkaBroker

__all__ = [
    "Actor",
    "ActorNotFound",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "Call",
    "DecodeError",
    "DuplicateActor",
    "EncodeError",
    "Encoder",
    "GenericActor",
    "Interrupt",
    "JSONEncoder",
    "KafkaBroker",
    "Message",
    "MessageProxy",
    "MessageTooLarge",
    "Middleware",
    "NoBrokerConfigured",
    "QueueJoinTimeout",
    "QueueNotFound",
    "RateLimitExceeded",
    "Retry",
    "SendFuture",
    "StubBroker",
    "TimeLimitExceeded",
    "Worker",
    "actor",
    "get_broker",
    "get_encoder",
    "group",
    "pipeline",
    "set_broker",
    "set_encoder",
]

__getattr__ = lazy_attributes(__name__, {"KafkaBroker": "broker.brokers.kafka"})
