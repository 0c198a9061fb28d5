"""``POST /events``: validate, enrich, enqueue ``process_event`` on Kafka, answer 202 once acked."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, current_app, g, request
from flask.typing import ResponseReturnValue
from flask_jwt_extended import get_jwt_identity
from marshmallow import ValidationError

from app import idempotency
from app.auth import roles_required, scope_denial
from app.errors import error_response
from app.ratelimit import check_event_rate
from app.schemas import event_schema
from app.services import services
from broker import BrokerUnavailable, MessageTooLarge
from core import turns
from tasks import process_event

blueprint = Blueprint("events", __name__)
RETRY_AFTER_SECONDS = "5"


@blueprint.post("/events")
@roles_required("device", "admin")
def post_event() -> ResponseReturnValue:
    if not request.is_json:
        return error_response(415, "unsupported_media_type", "send the event as application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser can go: as malformed as any other
        body = None
    if body is None:
        return error_response(400, "bad_request", "the body is not valid JSON")
    if not isinstance(body, dict):
        return error_response(422, "validation_error", "the body must be a JSON object")
    try:
        data = event_schema.load(body)
    except ValidationError as exc:
        return error_response(422, "validation_error", "the event is invalid", fields=exc.normalized_messages())
    subject = get_jwt_identity()
    denied = scope_denial(data["device_id"], reading=False)
    if denied is not None:
        return denied
    raw_key = request.headers.get(idempotency.HEADER)
    prepared = None
    if raw_key is not None:
        prepared = idempotency.prepare(raw_key, subject, data, g.request_id, services().clients.settings)
        if not isinstance(prepared, idempotency.Prepared):
            return prepared  # a malformed key
    # the rate limits and the key's claim in one Redis round trip (app/ratelimit.py)
    denied, found = check_event_rate(data["device_id"], subject, claim=prepared)
    turns.give_way()  # back from Redis: reads first (core/turns.py)
    if denied is not None:
        return denied
    held = None
    if prepared is not None and raw_key is not None:  # prepared only from a key
        outcome = idempotency.resolve(services(), prepared, found, raw_key, subject, data, g.request_id)
        if not isinstance(outcome, idempotency.Claim):
            return outcome  # the first answer again, or why not
        held = outcome

    event = {
        "request_id": g.request_id,
        "device_id": data["device_id"],
        "user_id": subject,
        "received_at": dt.datetime.now(dt.UTC).isoformat(),
        "payload": data["payload"],
    }
    if held is not None:
        event["idempotency_key"] = held.hashed  # the worker stores a retry once even without Redis
    response, status = _enqueue(event)
    if held is not None:  # before giving way: an accepted event's key must not stay pending
        idempotency.settle(services(), held, status=status, request_id=g.request_id)
    turns.give_way()  # back from Kafka's acknowledgement: reads first (core/turns.py)
    return response, status


def _enqueue(event: dict) -> tuple[Any, int]:
    """202 once Kafka acknowledged the task; 413 or 503 (with Retry-After) otherwise."""
    try:
        process_event.send_with_options(args=(event,), key=event["device_id"], headers={"request_id": g.request_id})
    except MessageTooLarge:
        return error_response(413, "request_entity_too_large", "the event is larger than the queue accepts")
    except BrokerUnavailable as exc:
        current_app.logger.warning("event not accepted: Kafka unavailable", extra={"error": str(exc)})
        response, status = error_response(503, "unavailable", "the event queue is unavailable; retry later")
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response, status
    return {"request_id": g.request_id, "status": "accepted"}, 202
