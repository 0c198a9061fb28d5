"""Liveness (``/healthz``: the process serves requests) and readiness (``/readyz``: PostgreSQL,
Redis and Kafka are reachable) for the load balancer and orchestrator."""

from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from app.services import services

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}, 200


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    checks = {"postgres": _check_postgres, "redis": _check_redis, "kafka": _check_kafka}
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            current_app.logger.warning("readiness check failed", extra={"check": name, "error": str(exc)})
            results[name] = "unavailable"
    ready = all(v == "ok" for v in results.values())
    return {"status": "ready" if ready else "unavailable", "checks": results}, 200 if ready else 503


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
