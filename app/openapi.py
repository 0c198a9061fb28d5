"""``/openapi.json``, generated once per process from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint

from app.schemas import AcceptedSchema, ErrorSchema, EventSchema, ResourceSchema
from app.services import services

blueprint = Blueprint("openapi", __name__)


def build_spec() -> dict[str, Any]:
    spec = APISpec(title="device-backend", version="1.0.0", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for name, schema in (("Event", EventSchema), ("Accepted", AcceptedSchema), ("Resource", ResourceSchema),
                         ("Error", ErrorSchema)):  # fmt: skip
        spec.components.schema(name, schema=schema)

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": "Error"}}}

    auth_errors = {"401": error("missing or invalid token"), "403": error("token lacks the role or the device scope")}
    spec.path(
        path="/events",
        operations={
            "post": {
                "summary": "Submit a device event (roles: device for its own ids, admin)",
                "security": [{"bearer": []}],
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "description": "retries with the same key (per token subject, 24 h) get the first "
                                               "answer and enqueue nothing",
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": "Event"}}},
                "responses": {
                    "202": {"description": "accepted: stored in Kafka",
                            "content": {"application/json": {"schema": "Accepted"}}},
                    "400": error("body is not JSON"), **auth_errors, "413": error("body too large"),
                    "409": error("a request with this Idempotency-Key is still in progress"),
                    "415": error("not application/json"),
                    "422": error("invalid event, or an Idempotency-Key reused with another body"),
                    "429": error("too many events for this device or token subject; see Retry-After"),
                    "503": error("Kafka unavailable; retry after Retry-After seconds"),
                },
            }
        },
    )  # fmt: skip
    spec.path(
        path="/resource/{resource_id}",
        operations={
            "get": {
                "summary": "Read a device's current state (roles: user, device, admin)",
                "security": [{"bearer": []}],
                "parameters": [{"name": "resource_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the resource; X-Cache tells HIT or MISS",
                            "content": {"application/json": {"schema": "Resource"}}},
                    "400": error("invalid id"), **auth_errors, "404": error("no such resource"),
                },
            }
        },
    )  # fmt: skip
    spec.path(
        path="/healthz", operations={"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}}
    )
    readiness = {"200": {"description": "ready"}, "503": {"description": "a dependency is down"}}
    spec.path(
        path="/readyz", operations={"get": {"summary": "Readiness of PostgreSQL, Redis, Kafka", "responses": readiness}}
    )
    return spec.to_dict()


@blueprint.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return services().openapi_spec
