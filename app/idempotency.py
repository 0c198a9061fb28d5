"""``Idempotency-Key`` on ``POST /events``: a device that retries (after a timeout, or a 503
whose send did reach Kafka) gets the first answer back instead of writing a second event.

The key (1-128 of ``A-Z a-z 0-9 . _ : -``) is scoped to the token's subject and kept for 24 h in
Redis under ``idempotency:<sha256(subject, key)>``, claimed with ``SET NX``:

* first request: claimed as *pending*, enqueued, then stored as the answer (202 + request id);
  a 503 releases the claim, so the device's retry can go through;
* same key, same body, answered: the stored answer again, nothing enqueued;
* same key, same body, still pending (a concurrent duplicate): 409, retry shortly;
* same key, another body: 422.

The claim travels in the rate limits' Lua script (:func:`prepare`, then
:func:`app.ratelimit.check_event_rate`, then :func:`resolve`): one Redis round trip for both.

Redis can be down: then the API cannot tell, enqueues, and the worker stores the event once all
the same, because the hashed key travels in the event and ``events.idempotency_key`` is unique.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import redis

from app.errors import error_response
from app.services import Services

HEADER = "Idempotency-Key"
TTL_SECONDS = 24 * 3600
PENDING_TTL_SECONDS = 60  # a claim whose request died mid-way frees itself
KEY_PREFIX = "idempotency:"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def event_key(subject: str, key: str) -> str:
    """The key as stored with the event (and in Redis): scoped to the subject, fixed length."""
    return hashlib.sha256(f"{subject}\0{key}".encode()).hexdigest()


@dataclass
class Claim:
    """This request's hold on an idempotency key (``redis_key`` None: Redis was unreachable)."""

    hashed: str
    fingerprint: str
    redis_key: str | None


@dataclass
class Prepared:
    """A valid key, hashed, with the pending claim to store: what the rate-limit script claims."""

    hashed: str
    fingerprint: str
    redis_key: str
    pending: str
    pending_ttl: int = PENDING_TTL_SECONDS


def prepare(raw_key: str, subject: str, body: dict[str, Any], request_id: str) -> Prepared | Any:
    """The claim to make for ``raw_key``, or the 400 a malformed key gets."""
    if not _VALID.match(raw_key):
        return error_response(400, "bad_request", f"{HEADER} must be 1-128 letters, digits or ._:-")
    hashed = event_key(subject, raw_key)
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    pending = json.dumps({"state": "pending", "fingerprint": fingerprint, "request_id": request_id})
    return Prepared(hashed, fingerprint, KEY_PREFIX + hashed, pending)


def resolve(svc: Services, prepared: Prepared, found: Any, raw_key: str, subject: str, body: dict[str, Any],
            request_id: str) -> Claim | Any:  # fmt: skip
    """What the script's claim found (``app.ratelimit.check_event_rate``): this request's
    :class:`Claim`, or the response it must get instead. ``NOT_CHECKED`` (Redis skipped or
    failing): no claim, the worker dedupes; a claim that expired in between: claimed afresh."""
    from app.ratelimit import NOT_CHECKED

    if found is NOT_CHECKED:
        return Claim(prepared.hashed, prepared.fingerprint, None)
    if found is True:
        return Claim(prepared.hashed, prepared.fingerprint, prepared.redis_key)
    if found is None:  # the other claim expired between the script's SET and GET: cannot happen atomically
        return claim(svc, raw_key, subject, body, request_id)
    return _answer_for(prepared.fingerprint, json.loads(found))


def claim(svc: Services, raw_key: str, subject: str, body: dict[str, Any], request_id: str) -> Claim | Any:
    """Claim ``raw_key`` for this request, or return the response it must get instead.

    Redis goes through the API's breaker (``svc``): while it is down, no claim is made and the
    worker dedupes."""
    if not _VALID.match(raw_key):
        return error_response(400, "bad_request", f"{HEADER} must be 1-128 letters, digits or ._:-")
    hashed = event_key(subject, raw_key)
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if not svc.redis_available():
        return Claim(hashed, fingerprint, None)
    redis_key = KEY_PREFIX + hashed
    pending = json.dumps({"state": "pending", "fingerprint": fingerprint, "request_id": request_id})
    try:
        if svc.redis.set(redis_key, pending, nx=True, ex=PENDING_TTL_SECONDS):
            return Claim(hashed, fingerprint, redis_key)
        stored = json.loads(svc.redis.get(redis_key) or "null")
    except redis.RedisError as exc:
        svc.redis_failed(exc)
        return Claim(hashed, fingerprint, None)
    if stored is None:  # expired between SET and GET: treat as new
        return claim(svc, raw_key, subject, body, request_id)
    return _answer_for(fingerprint, stored)


def _answer_for(fingerprint: str, stored: dict[str, Any]) -> Any:
    """The response for a request whose key is already held: ``stored`` is the holder's record."""
    if stored["fingerprint"] != fingerprint:
        return error_response(422, "idempotency_key_reused", f"this {HEADER} was used with another body")
    if stored["state"] == "pending":
        response, status = error_response(409, "conflict", f"a request with this {HEADER} is in progress")
        response.headers["Retry-After"] = "1"
        return response, status
    response, status = {"request_id": stored["request_id"], "status": "accepted"}, stored["status"]
    return response, status, {"Idempotent-Replayed": "true"}


def settle(svc: Services, held: Claim, *, status: int, request_id: str) -> None:
    """Store the answer (a 202) for 24 h, or release the claim (anything else) for a retry."""
    if held.redis_key is None:
        return
    try:
        if status == 202:
            answer = {"state": "done", "fingerprint": held.fingerprint, "status": status, "request_id": request_id}
            svc.redis.set(held.redis_key, json.dumps(answer), ex=TTL_SECONDS)
        else:
            svc.redis.delete(held.redis_key)
    except redis.RedisError as exc:
        svc.redis_failed(exc)  # a pending claim frees itself after PENDING_TTL_SECONDS
