"""process_event: the worker side of ``POST /events``."""

from __future__ import annotations

import logging
from typing import Any

import redis
import sqlalchemy.exc

from broker import Call, actor
from core import runtime
from core.resources import apply_event, apply_events

log = logging.getLogger(__name__)

EVENTS_TOPIC = "events-input"


@actor(
    actor_name="process_event",
    topic=EVENTS_TOPIC,
    max_retries=3,
    min_backoff=2000,
    max_backoff=60000,
    key=lambda event: event["device_id"],
    # a malformed event, or one PostgreSQL refuses to store (a NUL in the payload), will not get
    # better by retrying: straight to the dead-letter topic. Outages of PostgreSQL or Redis are
    # not failures of the event: the worker waits for them (broker.transient).
    throws=(KeyError, TypeError, sqlalchemy.exc.DataError),
)
def process_event(event: dict[str, Any]) -> None:
    """Store ``event`` (audit row + newest-wins upsert), then invalidate the cached resource.

    Idempotent: a redelivered or replayed event changes nothing. If Redis is down the database
    write stands and a stale entry lives at most its TTL (logged, not retried: retrying cannot
    reach Redis either, and the event itself is safely stored).
    """
    clients = runtime.clients()
    result = apply_event(clients.engine, event)
    if result.record is not None:
        try:
            clients.resource_cache.invalidate(result.record)
        except redis.RedisError as exc:
            log.warning("cache invalidation failed", extra={"device_id": event["device_id"], "error": str(exc)})
    log.info(
        "Processed message",
        extra={"device_id": event["device_id"], "request_id": event["request_id"], "applied": result.applied},
    )


@process_event.batched(max_size=500)
def process_events(calls: list[Call]) -> None:
    """process_event for the ready events of up to 500 devices at once: one transaction (four
    statements) and one Redis round trip instead of three statements and a Redis call per event.

    Same effect as ``process_event`` per event. If anything fails, nothing was stored and the
    worker runs each event through ``process_event`` (so a bad event fails alone).
    """
    clients = runtime.clients()
    events = [call.args[0] if call.args else call.kwargs["event"] for call in calls]
    results = apply_events(clients.engine, events)
    try:
        clients.resource_cache.invalidate_many([result.record for result in results if result.record is not None])
    except redis.RedisError as exc:
        log.warning("cache invalidation failed", extra={"devices": len(events), "error": str(exc)})
    for event, result in zip(events, results, strict=True):
        log.info(
            "Processed message",
            extra={"device_id": event["device_id"], "request_id": event["request_id"], "applied": result.applied},
        )
