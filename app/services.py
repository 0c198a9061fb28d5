"""The API's per-process state, one typed object on the app: the clients (from :mod:`core.wiring`),
Redis's health, and what the factory builds once from the settings (the token caches, the rate
limits, the in-flight count, the readiness cache, the OpenAPI document).

Built by ``create_app`` (in each gunicorn worker, after fork) and registered once with
:func:`register`; reached via :func:`services` and :func:`settings`, never by a string key.
Flask-Caching and flask-jwt-extended keep their own entries in ``app.extensions``, as they do.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, current_app
from sqlalchemy import Engine

from core.resources import ResourceRecord
from core.singleflight import SingleFlight

if TYPE_CHECKING:  # types only: these modules read the services through this one
    from app.health import Readiness
    from app.jwks import KeySet
    from app.overload import InFlight
    from app.ratelimit import RateLimits
    from app.verified_tokens import VerifiedTokens
    from core.cache import ResourceCache
    from core.settings import Settings
    from core.wiring import Clients

log = logging.getLogger(__name__)

_EXTENSION = "services"  # the app's one entry in app.extensions: read it only through services()


@dataclass
class Services:
    """What one app holds for this process; :func:`services` returns it.

    ``verified_tokens`` is None when ``JWT_VERIFIED_CACHE_SECONDS`` is 0, ``jwks`` when no
    ``JWT_JWKS_URL`` is used, ``in_flight`` when ``API_MAX_IN_FLIGHT`` is 0.
    """

    clients: Clients
    rate_limits: RateLimits
    readiness: Readiness
    openapi_spec: dict[str, Any]
    verified_tokens: VerifiedTokens | None = None
    jwks: KeySet | None = None
    in_flight: InFlight | None = None
    redis_retry_after_s: float = 5.0
    _redis_down_until: float = field(default=0.0)
    # cache misses: one PostgreSQL read (and cache fill) per resource id at a time in this process
    resource_loads: SingleFlight[ResourceRecord | None] = field(default_factory=SingleFlight)

    @functools.cached_property
    def idempotency_claim(self) -> Any:
        """The idempotency claim script (:data:`app.idempotency.CLAIM`), registered once."""
        from app.idempotency import CLAIM

        return self.clients.redis.register_script(CLAIM)

    @property
    def settings(self) -> Settings:
        return self.clients.settings

    @property
    def engine(self) -> Engine:
        return self.clients.engine

    @property
    def redis(self) -> redis.Redis:
        return self.clients.redis

    @property
    def resource_cache(self) -> ResourceCache:
        return self.clients.resource_cache

    def redis_available(self) -> bool:
        """False for a few seconds after a Redis failure, so requests skip Redis (reads go to
        PostgreSQL, rate limits and idempotency keys let events through) instead of each paying
        the connection timeout."""
        return time.monotonic() >= self._redis_down_until

    def redis_failed(self, exc: Exception) -> None:
        if self.redis_available():
            log.warning(
                "redis unavailable; skipping it for a few seconds (reads from PostgreSQL, rate limits and "
                "idempotency keys open)",
                extra={"error": str(exc)},
            )
        self._redis_down_until = time.monotonic() + self.redis_retry_after_s


def register(app: Flask, services: Services) -> None:
    """Make ``services`` the app's (once, in ``create_app``)."""
    if _EXTENSION in app.extensions:
        raise RuntimeError("this app's services are registered already")
    app.extensions[_EXTENSION] = services


def services(app: Flask | None = None) -> Services:
    """The services of ``app``, or of the current app."""
    return (current_app if app is None else app).extensions[_EXTENSION]


def settings() -> Settings:
    """The current app's settings (the ones its clients were built from)."""
    return services().settings
