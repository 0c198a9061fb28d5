"""process_event: the worker side of ``POST /events``."""

from __future__ import annotations

import logging
from typing import Any

import redis
import sqlalchemy.exc

from broker import actor
from core.resources import apply_event
from core.runtime import resources

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
    res = resources()
    result = apply_event(res.engine, event)
    if result.record is not None:
        try:
            res.resource_cache.invalidate(result.record)
        except redis.RedisError as exc:
            log.warning("cache invalidation failed", extra={"device_id": event["device_id"], "error": str(exc)})
    log.info(
        "Processed message",
        extra={"device_id": event["device_id"], "request_id": event["request_id"], "applied": result.applied},
    )
