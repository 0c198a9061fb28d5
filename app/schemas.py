"""marshmallow schemas: request validation and the OpenAPI document are built from these."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_id_field = {"required": True, "validate": validate.Regexp(ID_PATTERN, error="1-128 letters, digits or ._:-")}


class EventSchema(Schema):
    """``POST /events`` body."""

    class Meta:
        unknown = RAISE

    device_id = fields.String(**_id_field, metadata={"example": "device-123"})
    payload = fields.Dict(
        required=True, keys=fields.String(), metadata={"example": {"status": "online", "temp_c": 37.2}}
    )


class AcceptedSchema(Schema):
    request_id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={"example": "accepted"})


class ResourceSchema(Schema):
    id = fields.String(required=True)
    payload = fields.Dict(required=True)
    version = fields.Integer(required=True, metadata={"description": "increments on every applied event"})
    updated_at = fields.DateTime(required=True)


class ErrorSchema(Schema):
    error = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", metadata={"description": "per-field messages (validation errors)"})


event_schema = EventSchema()  # built once per process, not per request
