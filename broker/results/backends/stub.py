"""Results in memory, for unit tests with the StubBroker."""

from __future__ import annotations

import threading
import time

from broker.results.backend import ResultBackend


class StubBackend(ResultBackend):
    """``namespace`` is accepted as Redis's is (each stub is its own store anyway)."""

    def __init__(self, *, namespace: str = "results", use_namespace_prefix_keys: bool = False) -> None:
        self.namespace = namespace
        self.use_namespace_prefix_keys = use_namespace_prefix_keys
        self._changed = threading.Condition()
        self._documents: dict[str, tuple[str, float]] = {}  # key (the message id) -> (document, expires at)

    def _put(self, message_id: str, document: str, ttl_ms: int) -> None:
        with self._changed:
            self._documents[message_id] = (document, time.monotonic() + ttl_ms / 1000)
            self._changed.notify_all()

    def _current(self, message_id: str) -> str | None:
        document, expires = self._documents.get(message_id, (None, 0.0))
        return document if time.monotonic() < expires else None

    def _get(self, message_id: str, timeout_ms: int | None) -> str | None:
        with self._changed:
            if timeout_ms is None:
                return self._current(message_id)
            deadline = time.monotonic() + timeout_ms / 1000
            while (document := self._current(message_id)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            return document
