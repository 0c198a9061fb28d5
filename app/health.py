"""Liveness (``/healthz``: the process serves requests) and readiness (``/readyz``: PostgreSQL,
Redis and Kafka are reachable) for the load balancer and orchestrator."""

from __future__ import annotations

import socket

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from app.services import services

blueprint = Blueprint("health", __name__)
CHECK_TIMEOUT_S = 1.0


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
    """A TCP connection to any bootstrap server (the producer itself reconnects on its own)."""
    servers = current_app.config["SETTINGS"].kafka_bootstrap_servers.split(",")
    last: Exception | None = None
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=CHECK_TIMEOUT_S).close()
            return
        except OSError as exc:
            last = exc
    raise ConnectionError(f"no Kafka bootstrap server reachable: {last}")
