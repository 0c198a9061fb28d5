"""Everything of this library that talks to kafka-python, and the only place that imports it.

- :mod:`~broker.brokers.kafka.broker`: :class:`KafkaBroker` (the producer side, building consumers);
- :mod:`~broker.brokers.kafka.consumer`: the worker's group consumer and its rebalance listener;
- :mod:`~broker.brokers.kafka.internals`: every use of kafka-python's private internals, checked;
- :mod:`~broker.brokers.kafka.producer_thread`: the producer on a native thread (opt-in, gevent);
- :mod:`~broker.brokers.kafka.admin`: operator tools (lag, groups, dead-letter reads, replay, skip);
- :mod:`~broker.brokers.kafka.errors`: ``KafkaError`` translated into :mod:`broker.errors`.

Importing this package imports kafka-python; ``import broker`` alone does not (``broker.KafkaBroker``
is loaded on first use).
"""

from broker.brokers.kafka.broker import KafkaBroker, client_options
from broker.brokers.kafka.consumer import CLOSE_TIMEOUT_MS, COMMIT_TIMEOUT_MS, KafkaGroupConsumer

__all__ = ["CLOSE_TIMEOUT_MS", "COMMIT_TIMEOUT_MS", "KafkaBroker", "KafkaGroupConsumer", "client_options"]
