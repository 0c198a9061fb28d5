"""Rate limits on ``POST /events``: per device id and per token subject, in Redis.

The ``limits`` library (flask-limiter's engine) supplies the Redis storage (``REDIS_URL``), the
key names and the moving-window strategy. Every limit for both scopes is checked in *one* Lua
script, one round trip (the library's ``hit`` takes one key a call: two scripts a request were a
fifth of a POST's CPU). The script is the library's ``acquire_moving_window`` for several keys,
all or nothing: a request refused for its subject no longer uses up its device's allowance.
The library's own ``get_window_stats`` still reads the same keys for ``Retry-After``.

A request with an ``Idempotency-Key`` has its key claimed in the same script, after the windows
took the hit (:func:`app.idempotency.prepare` / :func:`app.idempotency.resolve`): one round trip
for both checks instead of two or three.

The check runs inside the view rather than as a route decorator, because the device id is known
only once the body is validated and the subject only once the token is verified; so
flask-limiter's Flask extension is not used at all (its hook cost every request, limited or not,
about 4 % of a cache hit). If Redis is down the limit fails open (serving events matters more
than limiting them), through the API's Redis breaker (:meth:`app.services.Services.redis_failed`):
one warning, then Redis is skipped a while.
"""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Flask, current_app
from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from app.errors import error_response
from app.services import services
from core.settings import Settings


def configure_rate_limits(app: Flask, settings: Settings) -> None:
    storage = RedisStorage(
        settings.redis_url,
        key_prefix="ratelimit",  # its keys never meet resource:{id} or resource-fence:{id}
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    # one per app: the storage holds the app's own Redis connections
    app.extensions["event_rate_limiter"] = MovingWindowRateLimiter(storage)
    app.extensions["event_rate_limits"] = parse_many(settings.rate_limit_events)
    app.extensions["event_rate_script"] = storage.get_connection().register_script(ACQUIRE_ALL)
    app.extensions["event_rate_claim_script"] = storage.get_connection().register_script(ACQUIRE_ALL_AND_CLAIM)


# KEYS: the windows; ARGV: now, then each key's limit and expiry (seconds). Returns 0 when every
# window took the hit, else the 1-based index of the first full one (and no window took it).
ACQUIRE_ALL = """
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local entry = redis.call('lindex', KEYS[i], limit - 1)
    if entry and tonumber(entry) >= now - expiry then
        return i
    end
end
for i = 1, #KEYS do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    redis.call('lpush', KEYS[i], ARGV[1])
    redis.call('ltrim', KEYS[i], 0, limit - 1)
    redis.call('expire', KEYS[i], expiry)
end
return 0
"""


# The same for KEYS[1 .. n-1]; then, if every window took the hit, claim KEYS[n] (an idempotency
# key) with SET NX EX (ARGV[n * 2]: the pending value, ARGV[n * 2 + 1]: its TTL). Returns
# {full window's index or 0, 1 if claimed else 0, the key's stored value if it was not claimed}.
ACQUIRE_ALL_AND_CLAIM = """
local now = tonumber(ARGV[1])
local windows = #KEYS - 1
for i = 1, windows do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local entry = redis.call('lindex', KEYS[i], limit - 1)
    if entry and tonumber(entry) >= now - expiry then
        return {i, 0, false}
    end
end
for i = 1, windows do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    redis.call('lpush', KEYS[i], ARGV[1])
    redis.call('ltrim', KEYS[i], 0, limit - 1)
    redis.call('expire', KEYS[i], expiry)
end
local claim = KEYS[#KEYS]
if redis.call('set', claim, ARGV[2 * #KEYS], 'NX', 'EX', tonumber(ARGV[2 * #KEYS + 1])) then
    return {0, 1, false}
end
return {0, 0, redis.call('get', claim)}
"""

NOT_CHECKED = object()  # the idempotency key was not looked at (Redis skipped or failing)


def check_event_rate(device_id: str, subject: str, claim: Any | None = None) -> tuple[Any | None, Any]:
    """A JSON 429 with ``Retry-After`` if this device or this token's subject posts too fast
    (else None), and, when ``claim`` (an :class:`app.idempotency.Prepared`) is given, what its
    claim found: True (claimed for this request), the stored bytes (someone else's claim or
    answer; None if it expired meanwhile), or :data:`NOT_CHECKED`."""
    svc = services()
    if not svc.redis_available():
        return None, NOT_CHECKED  # Redis failed a moment ago: fail open without paying its timeout again
    limiter = current_app.extensions["event_rate_limiter"]
    checks = [
        (item, scope, value)
        for item in current_app.extensions["event_rate_limits"]
        for scope, value in (("device", device_id), ("subject", subject))
    ]
    keys = [limiter.storage.prefixed_key(item.key_for("events", scope, value)) for item, scope, value in checks]
    args: list[float | int | str] = [time.time()]
    for item, _, _ in checks:
        args += [item.amount, item.get_expiry()]
    found: Any = NOT_CHECKED
    try:
        if claim is None:
            full = int(current_app.extensions["event_rate_script"](keys=keys, args=args))
        else:
            keys.append(claim.redis_key)
            args += [claim.pending, claim.pending_ttl]
            full, claimed, stored = current_app.extensions["event_rate_claim_script"](keys=keys, args=args)
            full = int(full)
            if not full:
                found = True if int(claimed) else stored
        if not full:
            return None, found
        item, scope, value = checks[full - 1]
        reset = limiter.get_window_stats(item, "events", scope, value).reset_time
    except Exception as exc:  # Redis down or slow: fail open
        svc.redis_failed(exc)
        return None, NOT_CHECKED
    response, status = error_response(429, "too_many_requests", f"too many events for this {scope}: at most {item}")
    response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
    return (response, status), NOT_CHECKED
