"""What the Results middleware needs from a store: put a message's outcome, read it (waiting)."""

from __future__ import annotations

import json
from typing import Any

from broker.results.errors import ResultFailure, ResultMissing, ResultTimeout

DEFAULT_TIMEOUT_MS = 10_000


class ResultBackend:
    """Outcomes are JSON documents ``{"value": ...}`` or ``{"error": {"type", "message"}}`` under
    the message id. Subclasses implement :meth:`_put` and :meth:`_get`."""

    def store_result(self, message_id: str, value: Any, ttl_ms: int) -> None:
        self._put(message_id, json.dumps({"value": value}), ttl_ms)

    def store_exception(self, message_id: str, exception: BaseException, ttl_ms: int) -> None:
        error = {"type": f"{type(exception).__module__}.{type(exception).__qualname__}", "message": str(exception)}
        self._put(message_id, json.dumps({"error": error}), ttl_ms)

    def get_result(self, message_id: str, *, block: bool = False, timeout: int | None = None) -> Any:
        """The stored value. Raises :class:`ResultMissing` (not blocking, none stored),
        :class:`ResultTimeout` (blocking, none within ``timeout`` ms, default 10 s) or
        :class:`ResultFailure` (the actor failed for good)."""
        data = (
            self._get(message_id, timeout if timeout is not None else DEFAULT_TIMEOUT_MS)
            if block
            else self._get(message_id, None)
        )
        if data is None:
            if block:
                raise ResultTimeout(f"no result for message {message_id} within {timeout or DEFAULT_TIMEOUT_MS} ms")
            raise ResultMissing(f"no result for message {message_id}")
        outcome = json.loads(data)
        if "error" in outcome:
            error = outcome["error"]
            raise ResultFailure(f"actor raised {error['type']}: {error['message']}", error["type"], error["message"])
        return outcome["value"]

    def _put(self, message_id: str, document: str, ttl_ms: int) -> None:
        raise NotImplementedError

    def _get(self, message_id: str, timeout_ms: int | None) -> str | None:
        """The document, waiting up to ``timeout_ms`` (None: not at all)."""
        raise NotImplementedError
