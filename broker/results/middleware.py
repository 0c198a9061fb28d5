"""The Results middleware: stores what actors with ``store_results=True`` return."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from broker.middleware.middleware import Middleware
from broker.results.backend import ResultBackend

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.consumer import Record
    from broker.message import Message
    from broker.proxy import MessageProxy

log = logging.getLogger(__name__)

DEFAULT_RESULT_TTL_MS = 600_000  # 10 minutes


class Results(Middleware):
    """``broker.add_middleware(Results(backend=...))``, then ``@actor(store_results=True)`` and
    ``message.get_result(block=True, timeout=ms)``. A result is stored when the actor returns;
    a failure only once the message fails for good (dead-lettered), not on each retry. Results
    expire after ``result_ttl`` ms (per actor, default 10 minutes)."""

    actor_options = frozenset({"store_results", "result_ttl"})

    def __init__(self, *, backend: ResultBackend, store_results: bool = False, result_ttl: int | None = None) -> None:
        self.backend = backend
        self.store_results = store_results
        self.result_ttl = result_ttl or DEFAULT_RESULT_TTL_MS

    def _options(self, broker: Broker, actor_name: str) -> tuple[bool, int]:
        options = broker.get_actor(actor_name).options
        return options.get("store_results", self.store_results), options.get("result_ttl", self.result_ttl)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        store, ttl = self._options(broker, message.actor_name)
        if store and exception is None:
            self.backend.store_result(message, result, ttl)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        # a message a middleware skipped without failing it finished without a value (Dramatiq's)
        store, ttl = self._options(broker, message.actor_name)
        if store and not message.failed:
            self.backend.store_result(message, None, ttl)

    def on_dead_letter(self, broker: Broker, record: Record, message: Message | None, exception: BaseException) -> None:
        if message is None:
            return
        store, ttl = self._options(broker, message.actor_name)
        if store:
            self.backend.store_exception(message, exception, ttl)


def results_backend(broker: Broker) -> ResultBackend:
    """The backend of ``broker``'s ``Results`` middleware (what ``get_result`` reads without
    ``backend=``). Raises ``RuntimeError`` if the broker has none."""
    for middleware in broker.middleware:
        if isinstance(middleware, Results):
            return middleware.backend
    raise RuntimeError("the broker has no Results middleware: add one, or pass backend=")
