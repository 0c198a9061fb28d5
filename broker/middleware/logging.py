"""Structured log lines for message outcomes. Never logs arguments (payloads stay out of logs)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from broker.errors import RateLimitExceeded, Retry
from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy

log = logging.getLogger("broker.messages")


def _context(message: Message | MessageProxy, record: Record | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {"actor": message.actor_name, "message_id": message.message_id, "key": message.key}
    request_id = message.headers.get("request_id")
    if request_id:
        extra["request_id"] = request_id
    if record is not None:
        extra.update(topic=record.topic, partition=record.partition, offset=record.offset)
    return extra


class Logging(Middleware):
    """Success at DEBUG (tasks log their own domain line), retries at WARNING, dead letters at ERROR
    (at INFO when the exception is one the actor ``throws``: an expected outcome)."""

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None and log.isEnabledFor(logging.DEBUG):
            extra = _context(message, message.record)
            extra["attempt"] = message.attempt
            log.debug("message done", extra=extra)

    def on_retry(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        extra = _context(message, message.record)
        extra.update(attempt=message.attempt, delay_ms=delay_ms, error=type(message.exception).__name__)
        log.warning("message failed; will retry", extra=extra)

    def on_dependency_wait(self, broker: Broker, message: MessageProxy, delay_ms: int) -> None:
        # once when the wait begins, then every 10th try: an outage must not flood the log
        if message.dependency_failures % 10 != 1:
            return
        extra = _context(message, message.record)
        extra.update(failures=message.dependency_failures, delay_ms=delay_ms, error=type(message.exception).__name__)
        if isinstance(message.exception, RateLimitExceeded):
            log.info("rate limited; trying again later (not counted as an attempt)", extra=extra)
        else:
            log.warning("a dependency failed; waiting for it (not counted as an attempt)", extra=extra)

    def on_dead_letter(self, broker: Broker, record: Record, message: Message | None, exception: BaseException) -> None:
        if message is not None:
            extra = _context(message, record)
        else:
            extra = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        extra["error"] = type(exception).__name__
        if message is not None and _expected(broker, message, exception):
            # an exception the actor declared in ``throws`` is an outcome, not an error (as in Dramatiq)
            name = type(exception).__name__
            log.info("Failed to process message %s with expected exception %s.", message, name, extra=extra)
        elif isinstance(exception, Retry):  # the actor asked for retries, and they ran out: no error
            log.warning("Retries exceeded for message %r.", message.message_id if message else None, extra=extra)
        else:
            log.error("message dead-lettered", extra=extra)


def _expected(broker: Broker, message: Message, exception: BaseException) -> bool:
    """Whether ``exception`` is one the message's actor lists in ``throws``."""
    actor = broker.actors.get(message.actor_name)
    throws: Any = actor.options.get("throws") if actor is not None else None
    return bool(throws) and isinstance(exception, throws)
