"""``GET /resource/<id>``: read-through cache (Redis), PostgreSQL on a miss.

A hit is the cheapest path the API has: the entry's bytes from Redis go into the response as
they are, without a JSON parse and a re-serialization (``ResourceCache.get_raw``)."""

from __future__ import annotations

import redis
from flask import Blueprint, Response
from flask.typing import ResponseReturnValue

from app.auth import roles_required, scope_denial
from app.errors import error_response
from app.metrics import CACHE
from app.schemas import valid_id
from app.services import services
from core.resources import ResourceRecord, get_resource

blueprint = Blueprint("resources", __name__)


@blueprint.get("/resource/<resource_id>")
@roles_required("user", "device", "admin")
def read_resource(resource_id: str) -> ResponseReturnValue:
    if not valid_id(resource_id):
        return error_response(400, "bad_request", "resource ids are 1-128 letters, digits or ._:-")
    denied = scope_denial(resource_id, reading=True)
    if denied is not None:
        return denied
    svc = services()
    use_cache = svc.redis_available()
    if use_cache:
        try:
            cached = svc.resource_cache.get_raw(resource_id)
        except redis.RedisError as exc:
            svc.redis_failed(exc)
            CACHE.labels("error").inc()
            use_cache, cached = False, None
        if cached is not None and cached[:1] != b"{":  # not a record's JSON (not ours): read it afresh
            cached = None
        if cached is not None:
            CACHE.labels("hit").inc()
            return Response(cached, 200, {"X-Cache": "HIT"}, mimetype="application/json")
        if use_cache:
            CACHE.labels("miss").inc()

    def load() -> ResourceRecord | None:
        record = get_resource(svc.engine, resource_id)
        if record is not None and use_cache:
            try:
                svc.resource_cache.fill(record)  # versioned: never puts back a version older than the fence
            except redis.RedisError as exc:
                svc.redis_failed(exc)
        return record

    # requests that miss the same id together share one read (an expired entry under load)
    record, _ = svc.resource_loads.do(resource_id, load)
    if record is None:
        return error_response(404, "not_found", f"no resource {resource_id!r}")
    return record.to_json(), 200, {"X-Cache": "MISS"}
