"""Rate limits on ``POST /events``: per device id and per token subject, in Redis.

The ``limits`` library (flask-limiter's engine) supplies the Redis storage (``REDIS_URL``), the
key names and the moving-window strategy. Every limit for both scopes is checked in *one* Lua
script, one round trip (the library's ``hit`` takes one key a call, a round trip each; what the
extra round trips cost is in ``docs/performance.md``). The script is the library's
``acquire_moving_window`` for several keys, all or nothing: a request refused for its subject no
longer uses up its device's allowance. The library's own ``get_window_stats`` still reads the
same keys for ``Retry-After``.

A request with an ``Idempotency-Key`` has its key claimed in the same script, after the windows
took the hit (:func:`app.idempotency.prepare` / :func:`app.idempotency.resolve`): one round trip
for both checks instead of two or three.

The check runs inside the view rather than as a route decorator, because the device id is known
only once the body is validated and the subject only once the token is verified; so
flask-limiter's Flask extension is not used at all (its ``before_request`` hook ran on every
request, limited or not). If Redis is down the limit fails open (serving events matters more
than limiting them), through the API's Redis breaker (:meth:`app.services.Services.redis_failed`):
one warning, then Redis is skipped a while. Only Redis's own errors open it: an exception from
our code (a bug) is a 500 for that request, not a reason to stop limiting every request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, make_response, request
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from app.errors import error_response
from app.services import services
from core.settings import Settings


@dataclass(frozen=True)
class RateLimits:
    """The app's rate limits, parsed and registered once (the storage holds the app's own Redis
    connections, so one per app)."""

    limiter: MovingWindowRateLimiter
    storage: RedisStorage  # the limiter's, as its own type (the limiter declares the base Storage)
    events: list[RateLimitItem]  # RATE_LIMIT_EVENTS, for each scope of a POST /events
    refused: list[RateLimitItem]  # RATE_LIMIT_REFUSED, per client address
    acquire_all: Any  # ACQUIRE_ALL, registered on the storage's connection
    acquire_all_and_claim: Any  # ACQUIRE_ALL_AND_CLAIM, likewise


def build_rate_limits(settings: Settings) -> RateLimits:
    """``RATE_LIMIT_EVENTS`` and ``RATE_LIMIT_REFUSED`` on their own Redis storage, with both scripts."""
    storage = RedisStorage(
        settings.redis_url,
        key_prefix="ratelimit",  # its keys never meet resource:{id} or resource-fence:{id}
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    return RateLimits(
        limiter=MovingWindowRateLimiter(storage),
        storage=storage,
        events=parse_many(settings.rate_limit_events),
        # limits' connection protocol declares bytes; redis-py's register_script takes str as well
        acquire_all=storage.get_connection().register_script(ACQUIRE_ALL),  # type: ignore[arg-type]
        refused=parse_many(settings.rate_limit_refused),
        acquire_all_and_claim=storage.get_connection().register_script(ACQUIRE_ALL_AND_CLAIM),  # type: ignore[arg-type]
    )


# The moving windows of KEYS[1 .. windows]; ARGV: now, then each key's limit and expiry (seconds).
# hit_windows returns 0 when every window took the hit, else the 1-based index of the first full
# one (and no window took it).
_HIT_WINDOWS = """
local function hit_windows(windows)
    local now = tonumber(ARGV[1])
    for i = 1, windows do
        local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
        local entry = redis.call('lindex', KEYS[i], limit - 1)
        if entry and tonumber(entry) >= now - expiry then
            return i
        end
    end
    for i = 1, windows do
        local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
        redis.call('lpush', KEYS[i], ARGV[1])
        redis.call('ltrim', KEYS[i], 0, limit - 1)
        redis.call('expire', KEYS[i], expiry)
    end
    return 0
end
"""

# Every key is a window.
ACQUIRE_ALL = _HIT_WINDOWS + "return hit_windows(#KEYS)\n"

# KEYS[1 .. n-2] are windows; then, if every window took the hit, claim KEYS[n-1] (an idempotency
# key) as app.idempotency.CLAIM does, counting it against KEYS[n] (the subject's count of new keys).
# ARGV after the windows' pairs: the pending value, its TTL, the subject's cap, the count's TTL.
# Returns {full window's index or 0, 1 claimed / 0 held already / -1 over the cap, the held value}.
ACQUIRE_ALL_AND_CLAIM = (
    _HIT_WINDOWS
    + """
local windows = #KEYS - 2
local full = hit_windows(windows)
if full > 0 then
    return {full, 0, false}
end
local claim, count, base = KEYS[windows + 1], KEYS[windows + 2], 2 * windows + 1
local held = redis.call('get', claim)
if held then
    return {0, 0, held}
end
local n = redis.call('incr', count)
if n == 1 then redis.call('expire', count, tonumber(ARGV[base + 4])) end
if n > tonumber(ARGV[base + 3]) then
    return {0, -1, false}
end
redis.call('set', claim, ARGV[base + 1], 'EX', tonumber(ARGV[base + 2]))
return {0, 1, false}
"""
)

NOT_CHECKED = object()  # the idempotency key was not looked at (Redis skipped or failing)
OVER_CAP = object()  # the subject claimed its IDEMPOTENCY_MAX_KEYS_PER_SUBJECT: the key is not kept


def check_event_rate(device_id: str, subject: str, claim: Any | None = None) -> tuple[Any | None, Any]:
    """A JSON 429 with ``Retry-After`` if this device or this token's subject posts too fast
    (else None), and, when ``claim`` (an :class:`app.idempotency.Prepared`) is given, what its
    claim found: True (claimed for this request), the stored bytes (someone else's claim or
    answer; None if it expired meanwhile), :data:`OVER_CAP`, or :data:`NOT_CHECKED`."""
    svc = services()
    if not svc.redis_available():
        return None, NOT_CHECKED  # Redis failed a moment ago: fail open without paying its timeout again
    limits = svc.rate_limits
    limiter = limits.limiter
    checks = [
        (item, scope, value) for item in limits.events for scope, value in (("device", device_id), ("subject", subject))
    ]
    keys = [limits.storage.prefixed_key(item.key_for("events", scope, value)) for item, scope, value in checks]
    args: list[float | int | str] = [time.time()]
    for item, _, _ in checks:
        args += [item.amount, item.get_expiry()]
    found: Any = NOT_CHECKED
    try:
        if claim is None:
            full = int(limits.acquire_all(keys=keys, args=args))
        else:
            keys += [claim.redis_key, claim.count_key]
            args += [claim.pending, claim.pending_ttl, claim.cap, claim.count_ttl]
            full, claimed, stored = limits.acquire_all_and_claim(keys=keys, args=args)
            full = int(full)
            if not full:
                found = {1: True, -1: OVER_CAP}.get(int(claimed), stored)
        if not full:
            return None, found
        item, scope, value = checks[full - 1]
        reset = limiter.get_window_stats(item, "events", scope, value).reset_time
    except (redis.RedisError, TimeoutError) as exc:  # Redis down or slow: fail open; a bug of ours is not that
        svc.redis_failed(exc)
        return None, NOT_CHECKED
    response, status = error_response(429, "too_many_requests", f"too many events for this {scope}: at most {item}")
    response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
    return (response, status), NOT_CHECKED


# Refused requests count too: a client whose requests keep being refused (a bad token, a body
# that never validates, ids outside its scope) costs a verification or a parse each time, and
# without a limit it could send them as fast as it likes. Counted per client address, in windows
# of their own (RATE_LIMIT_REFUSED), so a device's good requests never pay for its bad ones.
REFUSED_STATUSES = frozenset({400, 401, 403, 413, 415, 422})


def register_refused_rate_limit(app: Flask) -> None:
    """Answer 429 instead of the refusal once a client address has been refused too often.
    Register after the request log's hooks (after_request runs in reverse), so the log and the
    metrics see the 429."""

    @app.after_request
    def count_refused(response: Any) -> Any:
        if response.status_code not in REFUSED_STATUSES:
            return response
        limited = check_refused_rate(request.remote_addr or "unknown")
        return limited if limited is not None else response


def check_refused_rate(address: str) -> Any | None:
    """A JSON 429 response with ``Retry-After`` if ``address`` was refused too often, else None
    (fails open through the Redis breaker, as the event limits do)."""
    svc = services()
    if not svc.redis_available():
        return None
    limits = svc.rate_limits
    limiter = limits.limiter
    items = limits.refused
    keys = [limits.storage.prefixed_key(item.key_for("refused", "address", address)) for item in items]
    args: list[float | int] = [time.time()]
    for item in items:
        args += [item.amount, item.get_expiry()]
    try:
        full = int(limits.acquire_all(keys=keys, args=args))
        if not full:
            return None
        item = items[full - 1]
        reset = limiter.get_window_stats(item, "refused", "address", address).reset_time
    except (redis.RedisError, TimeoutError) as exc:
        svc.redis_failed(exc)
        return None
    response = make_response(*error_response(429, "too_many_requests", f"too many refused requests: at most {item}"))
    response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
    return response
