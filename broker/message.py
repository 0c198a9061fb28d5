"""The task envelope: an immutable message, encoded as versioned JSON.

Wire format (UTF-8 JSON object, one per Kafka record value; the record key is ``key``)::

    {"v": 1, "message_id": "<uuid4 hex>", "actor_name": "ship", "topic": "orders",
     "key": "c1" | null, "args": [...], "kwargs": {...}, "options": {...},
     "headers": {"request_id": "..."}, "enqueued_at": "2026-11-24T23:16:25.123456Z"}

Producers in other languages may write it; unknown top-level fields are ignored, a missing
required field or another ``v`` is a :class:`~broker.errors.DecodeError`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from broker.encoder import get_encoder
from broker.errors import DecodeError, EncodeError

FORMAT_VERSION = 1
_REQUIRED = ("message_id", "actor_name", "topic", "args", "kwargs", "enqueued_at")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Message:
    """One call of an actor. Build new ones with :meth:`copy`; never mutate."""

    actor_name: str
    topic: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued_at: dt.datetime = field(default_factory=utcnow)

    def copy(self, **changes: Any) -> Message:
        """A new message with ``changes``; its headers are its own dict (a middleware writing the
        copy's headers, e.g. a trace context, must not rewrite the original's)."""
        changes.setdefault("headers", dict(self.headers))
        return dataclasses.replace(self, **changes)

    _replace = copy  # Dramatiq's messages are named tuples

    @property
    def message_timestamp(self) -> int:
        """When the message was first enqueued, in epoch ms (Dramatiq's name)."""
        return int(self.enqueued_at.timestamp() * 1000)

    @property
    def message_datetime(self) -> dt.datetime:
        """:attr:`message_timestamp` as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.message_timestamp / 1000, tz=dt.UTC)

    def __or__(self, other: Any) -> Any:
        """``a.message() | b.message()`` is a pipeline of the two (Dramatiq's)."""
        from broker.composition import pipeline

        return pipeline([self, other])  # the global broker, as in Dramatiq

    def __lt__(self, other: Message) -> bool:
        # an order so that lists of messages compare sorted, as Dramatiq's tuples do
        return (self.message_timestamp, self.message_id) < (other.message_timestamp, other.message_id)

    def get_result(self, *, backend: Any = None, block: bool = False, timeout: int | None = None) -> Any:
        """This message's result (``@actor(store_results=True)`` and the ``Results`` middleware).

        ``backend`` defaults to that of the global broker's ``Results`` middleware. Raises
        ``ResultMissing``, ``ResultTimeout`` (``block=True``, nothing within ``timeout`` ms) or
        ``ResultFailure`` (the actor failed for good), from ``broker.results``.
        """
        if backend is None:
            from broker.broker import get_broker
            from broker.results.middleware import results_backend

            backend = results_backend(get_broker())
        return backend.get_result(self, block=block, timeout=timeout)

    def asdict(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "message_id": self.message_id,
            "actor_name": self.actor_name,
            "topic": self.topic,
            "key": self.key,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "options": self.options,
            "headers": self.headers,
            "enqueued_at": format_timestamp(self.enqueued_at),
        }

    _asdict = asdict

    def encode(self) -> bytes:
        """JSON bytes. Raises :class:`EncodeError` for values JSON cannot carry (sets, NaN, objects)."""
        try:
            return get_encoder().encode(self.asdict())
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"arguments of {self.actor_name!r} are not JSON-serializable: {exc}") from exc

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | None) -> Message:
        """Parse wire bytes. Raises :class:`DecodeError` naming what is wrong, for *any* input.

        A record's value can be anything a producer wrote, ``None`` included (a Kafka tombstone):
        the worker dead-letters what does not decode, so nothing else may escape from here.
        """
        if data is None:
            raise DecodeError("the record has no value (a tombstone)")
        try:
            obj = get_encoder().decode(bytes(data))
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"message is not JSON: {exc}") from exc
        except RecursionError as exc:  # nested deeper than the parser's recursion allows
            raise DecodeError("message is nested too deeply to parse") from exc
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Message:
        """The message :meth:`asdict` gave (a pipeline carries its next step so). Raises :class:`DecodeError`."""
        if not isinstance(obj, dict):
            raise DecodeError("message is not a JSON object")
        if obj.get("v") != FORMAT_VERSION:
            raise DecodeError(f"unsupported message format version {obj.get('v')!r}")
        missing = [name for name in _REQUIRED if name not in obj]
        if missing:
            raise DecodeError(f"message lacks {', '.join(missing)}")
        try:
            key = obj.get("key")
            if key is not None and not isinstance(key, str):
                raise TypeError("key must be a string or null")
            headers = obj.get("headers") or {}
            if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                raise TypeError("headers must be an object of strings")
            options = obj.get("options") or {}
            if not isinstance(options, dict):
                raise TypeError("options must be an object")
            return cls(
                actor_name=_typed(obj, "actor_name", str),
                topic=_typed(obj, "topic", str),
                args=tuple(_typed(obj, "args", list)),
                kwargs=_typed(obj, "kwargs", dict),
                key=key,
                options=options,
                headers=headers,
                message_id=_typed(obj, "message_id", str),
                enqueued_at=dt.datetime.fromisoformat(_typed(obj, "enqueued_at", str)),
            )
        except (TypeError, ValueError) as exc:
            raise DecodeError(f"malformed message: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.actor_name}[{self.message_id}]"


def _typed(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj[name]
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {kind.__name__}")
    return value
