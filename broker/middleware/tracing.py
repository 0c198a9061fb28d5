"""OpenTelemetry trace context through Kafka: one trace from the sender to the worker's last write.

Needs only ``opentelemetry-api`` and is imported on demand (``from broker.middleware.tracing
import Tracing``), so ``import broker`` works without it. Without an SDK configured every span
here is a no-op; the application adds this middleware only when tracing is on, so a broker
without it pays nothing.

On enqueue, a ``create <topic>`` span (kind PRODUCER) is started as a child of the current span
and its W3C ``traceparent``/``tracestate`` are written into the message's headers; the broker
copies those two into the Kafka record's headers too (``broker.broker.RECORD_HEADERS``), where
other languages' consumers and Kafka tools look for them. A message re-sent from a place with no
active span (a delayed message forwarded, an early one re-delayed) keeps the trace it carries.

In the worker, each delivery of a message (each attempt) is a ``process <topic>`` span (kind
CONSUMER) whose parent is the context in the record's headers, else in the message's (a record
produced by another language with only a ``traceparent`` Kafka header continues its trace). The
span is current while the actor runs, so instrumented clients (SQLAlchemy, redis) record their
spans below it. A failed attempt gets ERROR status and an event saying what happens next
(``retry`` with its delay, ``dependency_wait`` or ``dead_letter``); its retry is the next span of
the same trace. Only the exception's type is recorded, never its message: an error's text can
carry the payload (SQLAlchemy puts the statement's parameters there).

A batch (``Actor.batched``) gets one more span, ``process <topic>`` with
``messaging.batch.message_count``, linking every message's span; the batch's own work (its DB
and cache spans) is recorded below that span, and each message's span lasts as long as the batch.

Put this middleware first in the broker's list: after-hooks run in reverse order, so it then
sees the outcome the retry middleware decided.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, TracerProvider

    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy
    from broker.worker import Worker

TRACE_HEADERS = ("traceparent", "tracestate")
ATTEMPT = "broker.attempt"  # no messaging convention counts deliveries in a worker
ACTOR = "broker.actor"


def record_carrier(record: Record) -> dict[str, str]:
    """The W3C trace headers of a Kafka record (values are bytes; undecodable ones are ignored)."""
    carrier: dict[str, str] = {}
    for key, value in record.headers:
        if key in TRACE_HEADERS and value is not None:
            try:
                carrier[key] = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                continue
    return carrier


class _Delivery(threading.local):
    """What one worker thread is processing now: its spans, and the context token to restore."""

    def __init__(self) -> None:
        self.spans: dict[int, Span] = {}
        self.token: Token[Context] | None = None
        self.batch: Span | None = None
        self.count = 0  # messages begun since the thread was last idle


class Tracing(Middleware):
    """Producer and consumer spans with the messaging semantic conventions' attribute names.

    Parameters:
      tracer_provider: where spans go; ``None`` means the global provider.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("broker", tracer_provider=tracer_provider)
        self.group_id: str | None = None
        self._local = _Delivery()

    # ------------------------------------------------------------ sending

    def before_enqueue(self, broker: Broker, message: Message, delay: int | None = None) -> None:
        parent = None  # the current context
        if "traceparent" in message.headers and not trace.get_current_span().get_span_context().is_valid:
            parent = propagate.extract(message.headers)  # a re-send from nowhere keeps its trace
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.operation.name": "create",
            "messaging.destination.name": message.topic,
            "messaging.message.id": message.message_id,
            ACTOR: message.actor_name,
        }
        if message.key is not None:
            attributes["messaging.kafka.message.key"] = message.key
        span = self.tracer.start_span(
            f"create {message.topic}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        try:
            # the message is new and its headers dict its own (Actor.message_with_options copies it)
            propagate.inject(message.headers, context=trace.set_span_in_context(span))
        finally:
            span.end()

    # ------------------------------------------------------------ processing

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.group_id = worker.group_id

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        record = message.record
        carrier = record_carrier(record)
        if "traceparent" not in carrier:
            carrier = message.headers
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.destination.partition": record.partition,
            "messaging.kafka.message.offset": record.offset,
            "messaging.message.id": message.message_id,
            ACTOR: message.actor_name,
            ATTEMPT: message.attempt,
        }
        if message.key is not None:
            attributes["messaging.kafka.message.key"] = message.key
        if self.group_id is not None:
            attributes["messaging.consumer.group.name"] = self.group_id
        span = self.tracer.start_span(
            f"process {record.topic}",
            context=propagate.extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        local = self._local
        local.spans[id(message)] = span
        local.count += 1
        if len(local.spans) == 1:
            local.token = otel_context.attach(trace.set_span_in_context(span))
        elif local.batch is None:  # a second message before the first ended: a batch
            first = next(iter(local.spans.values()))
            local.batch = self.tracer.start_span(
                f"process {record.topic}",
                context=otel_context.Context(),  # its own trace: it belongs to many
                kind=SpanKind.CONSUMER,
                links=[Link(first.get_span_context()), Link(span.get_span_context())],
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": record.topic,
                    ACTOR: message.actor_name,
                },
            )
            otel_context.attach(trace.set_span_in_context(local.batch))  # undone with the first token
        else:
            local.batch.add_link(span.get_span_context())

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        span = self._local.spans.pop(id(message), None)
        if span is None:
            return
        if exception is not None:
            kind = f"{type(exception).__module__}.{type(exception).__qualname__}"
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
            span.set_attribute("error.type", kind)
            if message.transient:
                span.add_event("dependency_wait", {"exception.type": kind})
            elif message.retry_delay_ms is not None and not message.failed:
                span.add_event("retry", {"exception.type": kind, "broker.retry.delay_ms": message.retry_delay_ms})
            else:
                span.add_event("dead_letter", {"exception.type": kind})
        self._finish(span)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        span = self._local.spans.pop(id(message), None)
        if span is None:
            return
        if self._local.batch is not None:
            span.add_event("batch_failed")  # the message runs again on its own, in a span of its own
            self._local.batch.set_status(Status(StatusCode.ERROR, "batch failed"))
        else:
            span.add_event("skipped")  # SkipMessage (AgeLimit, say): not run, and not a failure
        self._finish(span)

    def _finish(self, span: Span) -> None:
        span.end()
        local = self._local
        if local.spans:
            return
        if local.batch is not None:
            local.batch.set_attribute("messaging.batch.message_count", local.count)
            local.batch.end()
            local.batch = None
        local.count = 0
        if local.token is not None:
            otel_context.detach(local.token)
            local.token = None
