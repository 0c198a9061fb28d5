"""ShutdownNotifications: interrupt running actors that opted in when their worker stops.

An actor (or message) with ``notify_shutdown=True`` gets :class:`Shutdown` raised inside it when
the worker begins to stop, so a long task can save its state; the message is then handled as a
failure (retried, so it runs again after the restart, or dead-lettered once out of retries).
The others are left to finish within the shutdown timeout, as always."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

from broker.errors import Interrupt
from broker.middleware.middleware import Middleware
from broker.threading import current_platform, raise_thread_exception, supported_platforms

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy
    from broker.worker import Worker

log = logging.getLogger(__name__)


class Shutdown(Interrupt):
    """Raised inside an actor (with ``notify_shutdown``) whose worker is stopping."""


class ShutdownNotifications(Middleware):
    actor_options = frozenset({"notify_shutdown"})
    message_options = frozenset({"notify_shutdown"})

    def __init__(self, notify_shutdown: bool = False) -> None:
        self.notify_shutdown = notify_shutdown
        self._threads: set[int] = set()
        self._lock = threading.Lock()

    def validate_message_option(self, name: str, value: object) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"message option {name!r} must be True or False, not {value!r}")

    def should_notify(self, actor: Any, message: MessageProxy) -> bool:
        """The message's option, else its actor's, else this middleware's default."""
        notify = message.options.get("notify_shutdown")
        if notify is None:
            notify = actor.options.get("notify_shutdown")
        return bool(self.notify_shutdown if notify is None else notify)

    def after_process_boot(self, broker: Broker) -> None:
        if current_platform not in supported_platforms:
            message = f"ShutdownNotifications cannot kill threads on your current platform ({current_platform!r})."
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        with self._lock:
            for ident in self._threads:
                log.info("interrupting an actor for shutdown (notify_shutdown)")
                raise_thread_exception(ident, Shutdown)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if self.should_notify(broker.get_actor(message.actor_name), message):
            with self._lock:
                self._threads.add(threading.get_ident())

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._threads.discard(threading.get_ident())

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._threads.discard(threading.get_ident())
