"""What the Results middleware needs from a store: put a message's outcome, read it (waiting)."""

from __future__ import annotations

import json
from typing import Any

from broker.results.errors import ResultFailure, ResultMissing, ResultTimeout

DEFAULT_TIMEOUT_MS = 10_000


class ResultBackend:
    """Outcomes are JSON documents ``{"value": ...}`` or ``{"error": {"type", "message"}}`` under
    the message id. Subclasses implement :meth:`_put` and :meth:`_get`."""

    namespace = "results"

    def build_message_key(self, message: Any) -> str:
        """The key a message's result is stored under: ``<namespace>:<message_id>``. By the id
        alone (not Dramatiq's topic and actor too), so that ``get_result`` takes a bare id."""
        return f"{self.namespace}:{_message_id(message)}"

    def store_result(self, message: Any, value: Any, ttl_ms: int) -> None:
        """Store ``value`` for ``message`` (a message, or its id) for ``ttl_ms``."""
        self._put(_message_id(message), json.dumps({"value": value}), ttl_ms)

    def store_exception(self, message: Any, exception: BaseException, ttl_ms: int) -> None:
        """Store that ``message`` (a message, or its id) failed for good with ``exception``. The
        type is stored by its class name, as Dramatiq does (``RuntimeError``)."""
        error = {"type": type(exception).__name__, "message": str(exception)}
        self._put(_message_id(message), json.dumps({"error": error}), ttl_ms)

    def get_result(self, message: Any, *, block: bool = False, timeout: int | None = None) -> Any:
        """The value stored for ``message`` (a message, or its id). Raises :class:`ResultMissing`
        (not blocking, none stored), :class:`ResultTimeout` (blocking, none within ``timeout`` ms,
        default 10 s) or :class:`ResultFailure` (the actor failed for good)."""
        message_id = _message_id(message)
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


def _message_id(message: Any) -> str:
    """A message's id: backends take the message (as Dramatiq's do) or the id itself."""
    return message if isinstance(message, str) else message.message_id
