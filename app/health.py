"""Liveness (``/healthz``: the process serves requests) and readiness (``/readyz``: PostgreSQL,
Redis and Kafka are reachable) for the load balancer and orchestrator."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from app.services import services
from core.singleflight import SingleFlight

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}, 200


READY_CACHE_SECONDS = 1.0  # a flood of /readyz costs one round of checks per second, not a DB connection each


@dataclass
class Readiness:
    """The last round of readiness checks in this process (when, by ``time.monotonic()``, and the
    results), and the single flight that runs a round at a time."""

    checked: tuple[float, dict[str, str]] | None = None
    flights: SingleFlight[dict[str, str]] = field(default_factory=SingleFlight)


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    """The checks' result, computed at most once a second per process (requests arriving while a
    round runs share it): /readyz is unauthenticated and never shed, so without this a flood of
    it took a PostgreSQL connection per request from the pool the devices need."""
    readiness = services().readiness
    cached = readiness.checked
    now = time.monotonic()
    if cached is None or now - cached[0] >= READY_CACHE_SECONDS:
        results, _ = readiness.flights.do("readyz", _run_checks)
        cached = (time.monotonic(), results)
        readiness.checked = cached
    results = cached[1]
    ready = all(v == "ok" for v in results.values())
    return {"status": "ready" if ready else "unavailable", "checks": results}, 200 if ready else 503


def _run_checks() -> dict[str, str]:
    checks = {"postgres": _check_postgres, "redis": _check_redis, "kafka": _check_kafka}
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            current_app.logger.warning("readiness check failed", extra={"check": name, "error": str(exc)})
            results[name] = "unavailable"
    return results


def _check_postgres() -> None:
    with services().engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_redis() -> None:
    services().redis.ping()


def _check_kafka() -> None:
    """The producer's own state: failing while its sends fail, fine once one is acknowledged
    (with no recent send, a probe of the bootstrap servers stands in)."""
    broker = services().clients.broker
    health = getattr(broker, "health", None)
    if health is None:
        return  # a broker without a health check (the in-memory one in tests)
    ok, detail = health()
    if not ok:
        raise ConnectionError(f"Kafka producer: {detail}")
