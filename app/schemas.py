"""marshmallow schemas: request validation and the OpenAPI document are built from these."""

from __future__ import annotations

import math
import re
from typing import Any, overload

from marshmallow import RAISE, Schema, ValidationError, fields, validate

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"  # as the OpenAPI document shows it; match it with valid_id()
valid_id = re.compile(ID_PATTERN).fullmatch  # fullmatch: "$" alone lets a trailing newline through


class FullMatch(validate.Regexp):
    """``validate.Regexp`` that must match the whole value (``$`` matches before a final newline,
    so ``"dev-1\\n"`` passed as an id that looks like ``dev-1``); its pattern still documents it."""

    @overload
    def __call__(self, value: str) -> str: ...

    @overload
    def __call__(self, value: bytes) -> bytes: ...

    def __call__(self, value: Any) -> Any:  # as the overloads of validate.Regexp.__call__
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


_id_field: dict[str, Any] = {"required": True, "validate": FullMatch(ID_PATTERN, error="1-128 letters, digits or ._:-")}


MAX_PAYLOAD_DEPTH = 32
MAX_PAYLOAD_KEYS = 1000
# PostgreSQL's jsonb cannot hold NUL, and UTF-8 cannot carry a lone surrogate half
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def storable_json(value: Any) -> None:
    """Refuse what PostgreSQL's ``jsonb`` can never store (so it gets 422 now, not a 202 followed by
    a dead letter): NUL characters and lone surrogates in strings or keys, NaN and infinities;
    and payloads nested deeper than 32 levels or holding more than 1,000 keys in all."""
    keys = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            raise ValidationError(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")
        if isinstance(item, dict):
            keys += len(item)
            if keys > MAX_PAYLOAD_KEYS:
                raise ValidationError(f"more than {MAX_PAYLOAD_KEYS} keys in all")
            for key, child in item.items():
                if _UNSTORABLE.search(key):
                    raise ValidationError("a key holds a NUL character or a lone surrogate")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if _UNSTORABLE.search(item):
                raise ValidationError("a string holds a NUL character or a lone surrogate")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValidationError("NaN and Infinity are not JSON numbers")


class EventSchema(Schema):
    """``POST /events`` body."""

    class Meta:
        unknown = RAISE

    device_id = fields.String(**_id_field, metadata={"example": "device-123"})
    payload = fields.Dict(
        required=True,
        keys=fields.String(),
        validate=storable_json,
        metadata={"example": {"status": "online", "temp_c": 37.2}},
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
