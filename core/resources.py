"""The domain's data operations: apply an event to PostgreSQL, read a resource.

Used by the worker's task (writes) and the API (reads). Works with a plain SQLAlchemy engine,
no Flask.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from psycopg2.extras import execute_values
from sqlalchemy import Engine, text

# The newest-wins rule, one text for the single and the batched upsert: a resource takes an
# event only if it is newer by (received_at, request_id).
_RESOURCES_INSERT = "INSERT INTO resources (id, payload, version, event_at, event_request_id, updated_at) VALUES "
_RESOURCES_NEWEST_WINS = """
    ON CONFLICT (id) DO UPDATE
       SET payload = EXCLUDED.payload,
           version = resources.version + 1,
           event_at = EXCLUDED.event_at,
           event_request_id = EXCLUDED.event_request_id,
           updated_at = now()
     WHERE (resources.event_at, resources.event_request_id) < (EXCLUDED.event_at, EXCLUDED.event_request_id)
    RETURNING id, payload, version, updated_at
"""
_EVENTS_INSERT = (
    "INSERT INTO events (request_id, device_id, user_id, payload, received_at, applied, idempotency_key) VALUES "
)
_EVENTS_ONCE = " ON CONFLICT (request_id) DO NOTHING"

# One statement each; both run in one transaction in apply_event.
_UPSERT_RESOURCE = text(
    _RESOURCES_INSERT + "(:id, CAST(:payload AS jsonb), 1, :event_at, :request_id, now())" + _RESOURCES_NEWEST_WINS
)
_INSERT_EVENT = text(
    _EVENTS_INSERT
    + "(:request_id, :id, :user_id, CAST(:payload AS jsonb), :event_at, :applied, :idempotency_key)"
    + _EVENTS_ONCE
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
    params = _params(event)
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


# The same statements for many events at once (psycopg2's execute_values fills the VALUES list).
_UPSERT_RESOURCES = _RESOURCES_INSERT + "%s" + _RESOURCES_NEWEST_WINS
_UPSERT_RESOURCES_ROW = "(%s, CAST(%s AS jsonb), 1, %s, %s, now())"
_INSERT_EVENTS = _EVENTS_INSERT + "%s" + _EVENTS_ONCE
_INSERT_EVENTS_ROW = "(%s, %s, %s, CAST(%s AS jsonb), %s, %s, %s)"


def _params(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["device_id"],
        "payload": json.dumps(event["payload"]),
        "event_at": event["received_at"],
        "request_id": event["request_id"],
        "user_id": event.get("user_id"),
        "idempotency_key": event.get("idempotency_key"),
    }


def apply_events(engine: Engine, events: list[dict[str, Any]]) -> list[ApplyResult]:
    """:func:`apply_event` for events of distinct devices, in one transaction of four statements.

    The worker's batch form of ``process_event``: one round trip per statement instead of three
    per event. Same effect as applying the events one by one, in any order (they touch different
    resources). All or nothing: on any error the transaction rolls back and the caller applies
    the events singly. Raises ``ValueError`` if two events share a device.
    """
    params = [_params(event) for event in events]
    ids = [p["id"] for p in params]
    if len(set(ids)) != len(ids):
        raise ValueError("apply_events takes at most one event per device")
    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        keys = [p["idempotency_key"] for p in params if p["idempotency_key"] is not None]
        retried: set[str] = set()
        if keys:
            cursor.execute("SELECT idempotency_key FROM events WHERE idempotency_key = ANY(%s)", (keys,))
            retried = {row[0] for row in cursor.fetchall()}
        fresh = [p for p in params if p["idempotency_key"] is None or p["idempotency_key"] not in retried]
        applied: dict[str, Any] = {}
        if fresh:
            rows = execute_values(
                cursor, _UPSERT_RESOURCES, [(p["id"], p["payload"], p["event_at"], p["request_id"]) for p in fresh],
                template=_UPSERT_RESOURCES_ROW, page_size=len(fresh), fetch=True,
            )  # fmt: skip
            applied = {row[0]: row for row in rows}
            execute_values(
                cursor, _INSERT_EVENTS,
                [(p["request_id"], p["id"], p["user_id"], p["payload"], p["event_at"], p["id"] in applied,
                  p["idempotency_key"]) for p in fresh],
                template=_INSERT_EVENTS_ROW, page_size=len(fresh),
            )  # fmt: skip
        current: dict[str, Any] = {}
        unchanged = [i for i in ids if i not in applied]
        if unchanged:
            cursor.execute("SELECT id, payload, version, updated_at FROM resources WHERE id = ANY(%s)", (unchanged,))
            current = {row[0]: row for row in cursor.fetchall()}
    results = []
    for resource_id in ids:
        row = applied.get(resource_id) or current.get(resource_id)
        record = ResourceRecord(id=row[0], payload=row[1], version=row[2], updated_at=row[3]) if row else None
        results.append(ApplyResult(applied=resource_id in applied, record=record))
    return results


def get_resource(engine: Engine, resource_id: str) -> ResourceRecord | None:
    with engine.connect() as conn:
        row = conn.execute(_SELECT_RESOURCE, {"id": resource_id}).one_or_none()
    return ResourceRecord.from_row(row) if row is not None else None
