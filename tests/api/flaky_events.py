"""Loaded by ``worker.py`` beside ``tasks`` (tests/api/test_jaeger_trace.py): the first attempt of
an event whose device id starts with ``FLAKY_DEVICE_PREFIX`` (from the environment) fails once,
before it touches PostgreSQL,
with an ordinary error (not a dependency's, not one of the actor's ``throws``), so the actor's own
retry runs it again after its backoff. Every other event goes through untouched.

The failure is raised where the task calls into ``core.resources``: the task, the broker, its
retry and its tracing are the real ones. A batch that holds such an event fails too (before any
statement), so the worker runs the event on its own, and its first attempt is the one that fails.
Importing this module patches ``tasks.events``: only a worker process started for that should.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import tasks.events
from core import resources

FLAKY_PREFIX = os.environ.get("FLAKY_DEVICE_PREFIX", "device-flaky-")
_failed: set[str] = set()
_lock = threading.Lock()


class InjectedFailure(RuntimeError):
    """The one failure of a flaky device's first attempt."""


def _first_attempt(device_id: str) -> bool:
    with _lock:
        return device_id.startswith(FLAKY_PREFIX) and device_id not in _failed


def apply_event(engine: Any, event: dict[str, Any]) -> resources.ApplyResult:
    """``core.resources.apply_event``, except that a flaky device's first call fails."""
    if _first_attempt(event["device_id"]):
        with _lock:
            _failed.add(event["device_id"])
        raise InjectedFailure("the first attempt of a flaky device's event")
    return resources.apply_event(engine, event)


def apply_events(engine: Any, events: list[dict[str, Any]]) -> list[resources.ApplyResult]:
    """``core.resources.apply_events``, except that a batch holding a flaky device's first event fails."""
    if any(_first_attempt(event["device_id"]) for event in events):
        raise InjectedFailure("a batch holding a flaky device's first event")
    return resources.apply_events(engine, events)


tasks.events.apply_event = apply_event  # the names the task calls
tasks.events.apply_events = apply_events
