"""The domain's data operations: apply an event to PostgreSQL, read a resource.

Used by the worker's task (writes) and the API (reads). Works with a plain SQLAlchemy engine,
no Flask.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

# One statement each; both run in one transaction in apply_event.
_UPSERT_RESOURCE = text(
    """
    INSERT INTO resources (id, payload, version, event_at, event_request_id, updated_at)
    VALUES (:id, CAST(:payload AS jsonb), 1, :event_at, :request_id, now())
    ON CONFLICT (id) DO UPDATE
       SET payload = EXCLUDED.payload,
           version = resources.version + 1,
           event_at = EXCLUDED.event_at,
           event_request_id = EXCLUDED.event_request_id,
           updated_at = now()
     WHERE (resources.event_at, resources.event_request_id) < (EXCLUDED.event_at, EXCLUDED.event_request_id)
    RETURNING id, payload, version, updated_at
    """
)
_INSERT_EVENT = text(
    """
    INSERT INTO events (request_id, device_id, user_id, payload, received_at, applied, idempotency_key)
    VALUES (:request_id, :id, :user_id, CAST(:payload AS jsonb), :event_at, :applied, :idempotency_key)
    ON CONFLICT (request_id) DO NOTHING
    """
)
_RETRY_STORED = text("SELECT 1 FROM events WHERE idempotency_key = :idempotency_key")
_SELECT_RESOURCE = text("SELECT id, payload, version, updated_at FROM resources WHERE id = :id")


@dataclass(frozen=True)
class ResourceRecord:
    """The canonical record, as the API returns it and the cache stores it."""

    id: str
    payload: dict[str, Any]
    version: int
    updated_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "payload": self.payload,
            "version": self.version,
            "updated_at": self.updated_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        }

    @classmethod
    def from_row(cls, row: Any) -> ResourceRecord:
        return cls(id=row.id, payload=row.payload, version=row.version, updated_at=row.updated_at)


@dataclass(frozen=True)
class ApplyResult:
    applied: bool  # the event changed the resource (False: duplicate or older than the stored state)
    record: ResourceRecord | None  # the resource as stored after the transaction


def apply_event(engine: Engine, event: dict[str, Any]) -> ApplyResult:
    """Record ``event`` in the audit table and make it the resource's state if it is newer.

    "Newer" is by (``received_at``, ``request_id``), so replays, duplicates and out-of-order
    deliveries never move a resource back in time, and applying one event twice is a no-op.

    An event with an ``idempotency_key`` (a device's retry of one request, see the API's
    ``Idempotency-Key``) whose key is already stored is a retry that got a new ``request_id``
    (when Redis could not dedupe it at the API): it changes nothing either.
    """
    params = {
        "id": event["device_id"],
        "payload": json.dumps(event["payload"]),
        "event_at": event["received_at"],
        "request_id": event["request_id"],
        "user_id": event.get("user_id"),
        "idempotency_key": event.get("idempotency_key"),
    }
    with engine.begin() as conn:
        if params["idempotency_key"] is not None and conn.execute(_RETRY_STORED, params).first():
            row = conn.execute(_SELECT_RESOURCE, params).one_or_none()
            return ApplyResult(applied=False, record=ResourceRecord.from_row(row) if row is not None else None)
        row = conn.execute(_UPSERT_RESOURCE, params).one_or_none()
        applied = row is not None
        conn.execute(_INSERT_EVENT, {**params, "applied": applied})
        if not applied:
            row = conn.execute(_SELECT_RESOURCE, params).one_or_none()
    return ApplyResult(applied=applied, record=ResourceRecord.from_row(row) if row is not None else None)


def get_resource(engine: Engine, resource_id: str) -> ResourceRecord | None:
    with engine.connect() as conn:
        row = conn.execute(_SELECT_RESOURCE, {"id": resource_id}).one_or_none()
    return ResourceRecord.from_row(row) if row is not None else None
