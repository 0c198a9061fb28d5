"""CurrentMessage: the message an actor is running for, from inside the actor (Dramatiq's)."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy


class CurrentMessage(Middleware):
    """``CurrentMessage.get_current_message()`` inside an actor gives its message proxy; None
    elsewhere. A context variable: an async actor's coroutine sees it too (its task starts in a
    copy of the worker thread's context)."""

    _MESSAGE: contextvars.ContextVar[MessageProxy | None] = contextvars.ContextVar("_MESSAGE", default=None)

    @classmethod
    def get_current_message(cls) -> MessageProxy | None:
        return cls._MESSAGE.get()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._MESSAGE.set(message)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        self._MESSAGE.set(None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._MESSAGE.set(None)
