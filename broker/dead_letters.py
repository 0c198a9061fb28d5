"""Dead letters: why a record was dead-lettered, the headers that say so, and reading them back.

A dead letter is the original record (same key, same value, its own headers kept) written to the
dead-letter topic with ``dlq.*`` headers describing the failure, after Kafka Connect's
convention. Everything that writes one (the worker, the delay forwarder, an operator's skip) and
everything that reads one (the operator commands, the console) takes the names from here, so the
two sides cannot drift apart. Nothing here talks to Kafka.
"""

from __future__ import annotations

import json
import traceback
from typing import Any

from broker.consumer import Record
from broker.errors import DecodeError
from broker.message import Message, format_timestamp, utcnow

DEFAULT_DEAD_LETTER_TOPIC = "dead-letters"  # applications pass their own
TRACEBACK_LIMIT = 4000  # characters kept in a dead letter's traceback header
DLQ_HEADER_PREFIX = "dlq."
REPLAY_HEADER = "replayed_from"  # "<dlq topic>:<partition>:<offset>" on a replayed record

# Why a record was dead-lettered (the ``dlq.reason`` header).
REASON_UNDECODABLE = "undecodable"  # not a message: no value, not JSON, another format version, bad fields
REASON_UNKNOWN_ACTOR = "unknown_actor"  # a message for an actor this worker does not have
REASON_FAILED = "failed"  # the actor failed for good (retries exhausted, or an exception in ``throws``)
REASON_WORKER_ERROR = "worker_error"  # the worker itself failed on this record (a bug in it or a middleware)
REASON_SKIPPED = "skipped"  # an operator moved the group past it (``worker.py skip``)
REASON_NO_TOPIC = "no_topic"  # a delayed message came due for a topic that no longer exists


def dead_letter_headers(
    record: Record,
    exception: BaseException,
    *,
    message: Message | None,
    attempts: int,
    host: str,
    reason: str = REASON_FAILED,
) -> list[tuple[str, bytes]]:
    """Kafka headers describing why ``record`` was dead-lettered (Kafka Connect's convention)."""
    tb = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    fields = {
        "reason": reason,
        "exception.type": f"{type(exception).__module__}.{type(exception).__qualname__}",
        "exception.message": str(exception)[:1000],
        "exception.traceback": tb[-TRACEBACK_LIMIT:],
        "attempts": str(attempts),
        "original.topic": record.topic,
        "original.partition": str(record.partition),
        "original.offset": str(record.offset),
        "original.timestamp_ms": str(record.timestamp_ms),
        "failed_at": format_timestamp(utcnow()),
        "worker.host": host,
    }
    if message is not None:
        fields["actor"] = message.actor_name
        fields["message_id"] = message.message_id
    return [(DLQ_HEADER_PREFIX + k, v.encode("utf-8")) for k, v in fields.items()]


def replay_headers(record: Any, dlq_topic: str) -> list[tuple[str, bytes]]:
    """The headers a dead letter is replayed with: its own, without the error headers, plus a
    ``replayed_from`` header naming where it was read (``record``: a dead-letter record, as a
    Kafka client returns it)."""
    headers = [(k, v) for k, v in (record.headers or []) if not k.startswith(DLQ_HEADER_PREFIX)]
    headers.append((REPLAY_HEADER, f"{dlq_topic}:{record.partition}:{record.offset}".encode()))
    return headers


def describe_dead_letter(record: Any, *, show_body: bool = False) -> dict[str, Any]:
    """A JSON-able summary of one dead-letter record: what it was, where it came from and why.

    The first fields answer an operator's questions at a glance: ``message_id``, ``request_id``
    (the message's header, if it has one), ``actor``, ``error`` (type and message) and
    ``failed_at``; then every dead-letter header. The message itself (its arguments: payloads)
    only with ``show_body``.
    """
    headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])}
    info = {k[len(DLQ_HEADER_PREFIX) :]: v for k, v in headers.items() if k.startswith(DLQ_HEADER_PREFIX)}
    try:
        message: Message | None = Message.decode(record.value)
    except DecodeError:
        message = None  # undecodable: that is why it is here
    summary: dict[str, Any] = {
        **info,  # first: a header named like a field below must not replace what the record says
        "message_id": info.get("message_id") or (message.message_id if message else None),
        "request_id": message.headers.get("request_id") if message else None,
        "actor": info.get("actor") or (message.actor_name if message else None),
        "error": f"{info.get('exception.type', '?')}: {info.get('exception.message', '')}".rstrip(": "),
        "failed_at": info.get("failed_at"),
        "dlq_partition": record.partition,
        "dlq_offset": record.offset,
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
    }
    if show_body:
        summary["body"] = json.loads(message.encode()) if message else record.value.decode("utf-8", "replace")
    return summary
