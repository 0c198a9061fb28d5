"""Retry failed messages with exponential backoff, in place and in order.

Unlike Dramatiq (which re-enqueues), a retry runs again in the same worker after its delay while
later messages with the same key wait, so per-key order holds; other keys keep flowing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.errors import Retry
from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 3
DEFAULT_MIN_BACKOFF = 2000  # ms: retries wait 2 s, 4 s, 8 s, ...
DEFAULT_MAX_BACKOFF = 60000


def backoff_ms(retry_number: int, min_backoff: int, max_backoff: int) -> int:
    """Delay before retry ``retry_number`` (1-based): ``min_backoff * 2**(n-1)``, capped."""
    delay: int = min_backoff * 2 ** (retry_number - 1)
    return min(delay, max_backoff)


class Retries(Middleware):
    """Decides, for each failure, between retrying after a backoff and dead-lettering.

    Actor options: ``max_retries``, ``min_backoff``/``max_backoff`` (ms), ``throws`` (exception
    types that are dead-lettered at once), ``retry_when(retries_so_far, exception) -> bool``
    (replaces the ``max_retries`` test) and ``transient`` (exception types that mean a dependency
    failed, on top of :mod:`broker.transient`'s defaults: the worker waits for those, and they are
    never counted here).
    """

    actor_options = frozenset(
        {"max_retries", "min_backoff", "max_backoff", "retry_when", "throws", "transient", "on_retry_exhausted"}
    )
    message_options = frozenset({"max_retries", "min_backoff", "max_backoff", "on_retry_exhausted"})

    def __init__(
        self,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        min_backoff: int = DEFAULT_MIN_BACKOFF,
        max_backoff: int = DEFAULT_MAX_BACKOFF,
        retry_when: Callable[[int, BaseException], bool] | None = None,
    ) -> None:
        self.defaults: dict[str, Any] = {
            "max_retries": max_retries,
            "min_backoff": min_backoff,
            "max_backoff": max_backoff,
            "retry_when": retry_when,
            "throws": (),
        }

    def validate_message_option(self, name: str, value: object) -> None:
        if name == "on_retry_exhausted":
            if not isinstance(value, str):
                raise ValueError(f"message option {name!r} must be an actor's name, not {value!r}")
            return
        _require_non_negative_int(name, value)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or message.transient:
            return  # a dependency's failure is not an attempt: the worker waits for it
        # the message's options override the actor's, which override the middleware's defaults
        options = {**self.defaults, **broker.get_actor(message.actor_name).options, **message.options}
        throws = options["throws"]
        if throws and isinstance(exception, throws):
            log.info("Aborting message %r.", message.message_id)
            message.fail()
            return
        retries_so_far = message.attempt - 1
        retry_when = options["retry_when"]
        if retry_when is not None:
            should_retry = retry_when(retries_so_far, exception)
        else:
            should_retry = retries_so_far < options["max_retries"]
        if not should_retry:
            message.fail()
            target = options.get("on_retry_exhausted")
            if target:  # Dramatiq's: (the message, how many retries) to the actor named
                exhausted = {"retries": retries_so_far, "max_retries": options["max_retries"]}
                broker.get_actor(target).send(message.asdict(), exhausted)
        elif isinstance(exception, Retry) and exception.delay is not None:
            message.retry(exception.delay)
        else:
            message.retry(backoff_ms(retries_so_far + 1, options["min_backoff"], options["max_backoff"]))


def _require_non_negative_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"message option {name!r} must be a non-negative integer, not {value!r}")
