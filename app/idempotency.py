"""``Idempotency-Key`` on ``POST /events``: a device that retries (after a timeout, or a 503
whose send did reach Kafka) gets the first answer back instead of writing a second event.

The key (1-128 of ``A-Z a-z 0-9 . _ : -``) is scoped to the token's subject and kept for
``IDEMPOTENCY_TTL_SECONDS`` (24 h) in Redis under ``idempotency:<sha256(subject, key)>``, claimed
only if absent (one Lua script):

* first request: claimed as *pending*, enqueued, then stored as the answer (202 + request id);
  a 503 releases the claim, so the device's retry can go through;
* same key, same body, answered: the stored answer again, nothing enqueued;
* same key, same body, still pending (a concurrent duplicate): 409, retry shortly;
* same key, another body: 422.

The claim travels in the rate limits' Lua script (:func:`prepare`, then
:func:`app.ratelimit.check_event_rate`, then :func:`resolve`): one Redis round trip for both.

Redis can be down: then the API cannot tell, enqueues, and the worker stores the event once all
the same, because the hashed key travels in the event and ``events.idempotency_key`` is unique.

Bounded: Redis runs with ``noeviction`` (docs/operations.md), so these keys must not grow without
limit. Each subject may claim at most ``IDEMPOTENCY_MAX_KEYS_PER_SUBJECT`` new keys per
``IDEMPOTENCY_TTL_SECONDS`` (counted under ``idempotency-count:<sha256(subject)>``); beyond that a
new key is not stored in Redis and its request is treated as when Redis is down: enqueued, and
stored once by the worker.
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
from core.settings import Settings

HEADER = "Idempotency-Key"
PENDING_TTL_SECONDS = 60  # a claim whose request died mid-way frees itself
KEY_PREFIX = "idempotency:"
COUNT_PREFIX = "idempotency-count:"  # never a prefix of, nor prefixed by, KEY_PREFIX's keys
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# KEYS[1] the claim, KEYS[2] the subject's count; ARGV: the pending value, its TTL, the cap, the
# count's TTL. 1: claimed; 0: the key exists (read it); -1: the subject is over its cap.
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[2])
if n == 1 then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4])) end
if n > tonumber(ARGV[3]) then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""


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
    """A valid key, hashed, with the pending claim to store and the subject's count to charge it
    to (``cap`` new keys per ``count_ttl`` seconds): what the rate-limit script claims."""

    hashed: str
    fingerprint: str
    redis_key: str
    pending: str
    count_key: str
    cap: int
    count_ttl: int
    pending_ttl: int = PENDING_TTL_SECONDS


def prepare(raw_key: str, subject: str, body: dict[str, Any], request_id: str, settings: Settings) -> Prepared | Any:
    """The claim to make for ``raw_key``, or the 400 a malformed key gets."""
    if not _VALID.fullmatch(raw_key):
        return error_response(400, "bad_request", f"{HEADER} must be 1-128 letters, digits or ._:-")
    hashed = event_key(subject, raw_key)
    fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    pending = json.dumps({"state": "pending", "fingerprint": fingerprint, "request_id": request_id})
    return Prepared(
        hashed, fingerprint, KEY_PREFIX + hashed, pending, _count_key(subject),
        settings.idempotency_max_keys_per_subject, settings.idempotency_ttl_seconds,
    )  # fmt: skip


def _count_key(subject: str) -> str:
    return COUNT_PREFIX + hashlib.sha256(subject.encode()).hexdigest()


def resolve(svc: Services, prepared: Prepared, found: Any, raw_key: str, subject: str, body: dict[str, Any],
            request_id: str) -> Claim | Any:  # fmt: skip
    """What the script's claim found (``app.ratelimit.check_event_rate``): this request's
    :class:`Claim`, or the response it must get instead. ``NOT_CHECKED`` (Redis skipped or
    failing): no claim, the worker dedupes; a claim that expired in between: claimed afresh."""
    from app.ratelimit import NOT_CHECKED, OVER_CAP

    if found is NOT_CHECKED or found is OVER_CAP:  # the worker dedupes, as without Redis
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
    prepared = prepare(raw_key, subject, body, request_id, svc.clients.settings)
    if not isinstance(prepared, Prepared):
        return prepared  # a malformed key
    hashed, fingerprint = prepared.hashed, prepared.fingerprint
    if not svc.redis_available():
        return Claim(hashed, fingerprint, None)
    try:
        claimed = svc.idempotency_claim(
            keys=[prepared.redis_key, prepared.count_key],
            args=[prepared.pending, prepared.pending_ttl, prepared.cap, prepared.count_ttl],
        )
        if claimed == 1:
            return Claim(hashed, fingerprint, prepared.redis_key)
        if claimed == -1:  # over the subject's cap: the worker dedupes, as without Redis
            return Claim(hashed, fingerprint, None)
        stored = json.loads(svc.redis.get(prepared.redis_key) or "null")
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
    body, status = {"request_id": stored["request_id"], "status": "accepted"}, stored["status"]
    return body, status, {"Idempotent-Replayed": "true"}


def settle(svc: Services, held: Claim, *, status: int, request_id: str) -> None:
    """Store the answer (a 202) for ``IDEMPOTENCY_TTL_SECONDS``, or release the claim (anything
    else) for a retry."""
    if held.redis_key is None:
        return
    try:
        if status == 202:
            answer = {"state": "done", "fingerprint": held.fingerprint, "status": status, "request_id": request_id}
            svc.redis.set(held.redis_key, json.dumps(answer), ex=svc.clients.settings.idempotency_ttl_seconds)
        else:
            svc.redis.delete(held.redis_key)
    except redis.RedisError as exc:
        svc.redis_failed(exc)  # a pending claim frees itself after PENDING_TTL_SECONDS
