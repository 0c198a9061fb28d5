"""Prometheus metrics for message processing (exposed by ``worker.py --metrics-port``)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy


class Prometheus(Middleware):
    def __init__(self, registry: CollectorRegistry = REGISTRY, namespace: str = "worker") -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["actor"], namespace=namespace, registry=registry)

        self.processed = counter("messages_processed", "Messages that succeeded")
        self.failed = counter("messages_failed", "Failed attempts (each retry counts)")
        self.retried = counter("messages_retried", "Retries scheduled")
        self.dead_lettered = counter("messages_dead_lettered", "Messages written to the dead-letter topic")
        self.dependency_waits = counter(
            "messages_dependency_waits", "Failures of a dependency (database, cache, broker) waited out"
        )
        self.in_progress = Gauge(
            "messages_in_progress",
            "Messages being processed",
            ["actor"],
            namespace=namespace,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.duration = Histogram(
            "message_duration_seconds",
            "Time spent in the actor",
            ["actor"],
            namespace=namespace,
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self._started = threading.local()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self.in_progress.labels(message.actor_name).inc()
        self._started.at = time.perf_counter()

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        actor = message.actor_name
        self.in_progress.labels(actor).dec()
        self.duration.labels(actor).observe(time.perf_counter() - getattr(self._started, "at", time.perf_counter()))
        (self.processed if exception is None else self.failed).labels(actor).inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.in_progress.labels(message.actor_name).dec()

    def on_retry(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        self.retried.labels(message.actor_name).inc()

    def on_dependency_wait(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        self.dependency_waits.labels(message.actor_name).inc()

    def on_dead_letter(self, broker: Broker, record: Record, message: Message | None, exception: BaseException) -> None:
        self.dead_lettered.labels(message.actor_name if message else "").inc()
