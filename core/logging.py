"""Structured JSON logs on stdout, one object per line (what CloudWatch and ECS expect).

Each line holds ``ts``, ``level``, ``logger``, ``pid`` and ``message``, then ``trace_id`` and
``span_id`` (W3C hex, as trace back-ends show them) when tracing is on and a span is active, then
every ``extra`` the call passed, then ``exc_info`` / ``stack_info`` when present: the same objects python-json-logger
wrote with our field names, written by orjson, at a fraction of the cost (``docs/performance.md``).
The API writes a line per request and the worker one per event, so this cost is paid at the full
request and event rate.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
from typing import Any

import orjson

# opentelemetry.trace.get_current_span while tracing is on (core.tracing), else None: one test per line
_current_span: Any = None


def include_trace_ids(enabled: bool) -> None:
    """Whether lines carry ``trace_id``/``span_id`` of the active span (called by :mod:`core.tracing`)."""
    global _current_span
    if enabled:
        from opentelemetry.trace import get_current_span

        _current_span = get_current_span
    else:
        _current_span = None


# attributes every LogRecord has; anything else on a record came in through ``extra``
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _json_default(value: Any) -> Any:
    """How a value json cannot write appears in a line: dates in ISO 8601, anything else as str."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


_stdlib_encode = json.JSONEncoder(default=_json_default).encode


def _encode(line: dict[str, Any]) -> str:
    """orjson (the faster encoder, ``docs/performance.md``); the standard one for what orjson
    refuses (integers beyond 64 bits, non-string keys in an extra), so no line is ever lost."""
    try:
        return orjson.dumps(line, default=_json_default).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _stdlib_encode(line)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record; ``ts`` as ``2026-12-03 14:33:23,736`` (logging's asctime)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once a second, not once a line
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created))
            self._second = second
        return f"{self._second_text},{int((created - second) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if _current_span is not None:  # the formatter runs in the logging call's thread and context
            span_context = _current_span().get_span_context()
            if span_context.is_valid:
                line["trace_id"] = format(span_context.trace_id, "032x")
                line["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return _encode(line)


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON. Safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kafka-python is chatty at INFO (every connection and group event).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
