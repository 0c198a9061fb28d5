"""Liveness for the load balancer: answers as long as the process serves requests."""

from flask import Blueprint

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> tuple[dict, int]:
    return {"status": "ok"}, 200
