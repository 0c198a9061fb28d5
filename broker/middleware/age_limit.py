"""AgeLimit: a message older than its ``max_age`` (ms since it was first enqueued) is not run.

As in Dramatiq it fails without running: it is skipped and dead-lettered (so nothing is lost
silently; ``worker.py dlq replay`` can still run it)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from broker.middleware.middleware import Middleware, SkipMessage

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy

log = logging.getLogger(__name__)


class AgeLimit(Middleware):
    """Parameters: ``max_age`` (ms), the default for actors that set none (None: no limit)."""

    actor_options = frozenset({"max_age"})
    message_options = frozenset({"max_age"})

    def __init__(self, *, max_age: int | None = None) -> None:
        self.max_age = max_age

    def validate_message_option(self, name: str, value: object) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"message option {name!r} must be a positive number of milliseconds, not {value!r}")

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor = broker.get_actor(message.actor_name)
        max_age = message.options.get("max_age") or actor.options.get("max_age", self.max_age)
        if not max_age:
            return
        if time.time() * 1000 - message.message_timestamp >= max_age:
            log.warning("message exceeded its age limit", extra={"message_id": message.message_id})
            message.fail()
            raise SkipMessage("Message age limit exceeded")
