"""What the Results middleware needs from a store: put a message's outcome, read it (waiting)."""

from __future__ import annotations

import json
from typing import Any

from broker.results.errors import ResultFailure, ResultMissing, ResultTimeout

DEFAULT_TIMEOUT_MS = 10_000


class ResultBackend:
    """Outcomes are JSON documents ``{"value": ...}`` or ``{"error": {"type", "message"}}`` under
    the message id. Subclasses implement :meth:`_put` and :meth:`_get`.

    ``use_namespace_prefix_keys`` (Dramatiq's option) keys each result by
    ``<namespace>:<topic>:<actor>:<message_id>`` instead, to scan or expire them by topic or actor;
    a result is then found by its message only, not by an id alone.
    """

    namespace = "results"
    use_namespace_prefix_keys = False

    def build_message_key(self, message: Any) -> str:
        """The key a message's result is stored under: ``<namespace>:<message_id>``. By the id
        alone (not Dramatiq's topic and actor too, unless ``use_namespace_prefix_keys``), so that
        ``get_result`` takes a bare id."""
        return f"{self.namespace}:{self._key_part(message)}"

    def _key_part(self, message: Any) -> str:
        """What follows the namespace in ``message``'s key (what :meth:`_put` and :meth:`_get` take)."""
        if not self.use_namespace_prefix_keys:
            return _message_id(message)
        if isinstance(message, str):
            raise TypeError(
                "with use_namespace_prefix_keys a result is keyed by topic, actor and id: pass the message, not its id"
            )
        return f"{message.topic}:{message.actor_name}:{message.message_id}"

    def store_result(self, message: Any, value: Any, ttl_ms: int) -> None:
        """Store ``value`` for ``message`` (a message, or its id) for ``ttl_ms``."""
        self._put(self._key_part(message), json.dumps({"value": value}), ttl_ms)

    def store_exception(self, message: Any, exception: BaseException, ttl_ms: int) -> None:
        """Store that ``message`` (a message, or its id) failed for good with ``exception``. The
        type is stored by its class name, as Dramatiq does (``RuntimeError``)."""
        error = {"type": type(exception).__name__, "message": str(exception)}
        self._put(self._key_part(message), json.dumps({"error": error}), ttl_ms)

    def get_result(self, message: Any, *, block: bool = False, timeout: int | None = None) -> Any:
        """The value stored for ``message`` (a message, or its id). Raises :class:`ResultMissing`
        (not blocking, none stored), :class:`ResultTimeout` (blocking, none within ``timeout`` ms,
        default 10 s) or :class:`ResultFailure` (the actor failed for good)."""
        message_id = _message_id(message)
        key = self._key_part(message)
        data = self._get(key, timeout if timeout is not None else DEFAULT_TIMEOUT_MS) if block else self._get(key, None)
        if data is None:
            if block:
                raise ResultTimeout(f"no result for message {message_id} within {timeout or DEFAULT_TIMEOUT_MS} ms")
            raise ResultMissing(f"no result for message {message_id}")
        outcome = json.loads(data)
        if "error" in outcome:
            error = outcome["error"]
            raise ResultFailure(f"actor raised {error['type']}: {error['message']}", error["type"], error["message"])
        return outcome["value"]

    def _put(self, key: str, document: str, ttl_ms: int) -> None:
        """Store ``document`` under ``key`` (the message id, or see ``use_namespace_prefix_keys``)."""
        raise NotImplementedError

    def _get(self, key: str, timeout_ms: int | None) -> str | None:
        """The document under ``key``, waiting up to ``timeout_ms`` (None: not at all)."""
        raise NotImplementedError


def _message_id(message: Any) -> str:
    """A message's id: backends take the message (as Dramatiq's do) or the id itself."""
    return message if isinstance(message, str) else message.message_id
