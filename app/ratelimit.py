"""Rate limits on ``POST /events``: per device id and per token subject, in Redis.

The ``limits`` library (flask-limiter's engine) supplies the Redis storage (``REDIS_URL``) and the
moving-window strategy. The check runs inside the view rather than as a route decorator, because
the device id is known only once the body is validated and the subject only once the token is
verified; so flask-limiter's Flask extension is not used at all (its hook cost every request,
limited or not, about 4 % of a cache hit). If Redis is down the
limit fails open (serving events matters more than limiting them), through the API's Redis
breaker (:meth:`app.services.Services.redis_failed`): one warning, then Redis is skipped a while.
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


def check_event_rate(device_id: str, subject: str) -> Any | None:
    """A JSON 429 with ``Retry-After`` if this device or this token's subject posts too fast."""
    svc = services()
    if not svc.redis_available():
        return None  # Redis failed a moment ago: fail open without paying its timeout again
    limiter = current_app.extensions["event_rate_limiter"]
    try:
        for item in current_app.extensions["event_rate_limits"]:
            for scope, value in (("device", device_id), ("subject", subject)):
                if not limiter.hit(item, "events", scope, value):
                    reset = limiter.get_window_stats(item, "events", scope, value).reset_time
                    response, status = error_response(
                        429, "too_many_requests", f"too many events for this {scope}: at most {item}"
                    )
                    response.headers["Retry-After"] = str(max(1, math.ceil(reset - time.time())))
                    return response, status
    except Exception as exc:  # Redis down or slow (limits raises the client's errors): fail open
        svc.redis_failed(exc)
    return None
