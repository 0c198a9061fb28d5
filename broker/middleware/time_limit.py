"""Interrupt actors that run longer than their ``time_limit`` (ms) with TimeLimitExceeded.

As in Dramatiq, a monitor thread raises the exception asynchronously in the worker thread; it
lands at the next Python bytecode, so a call blocked inside C (a socket read) is interrupted only
when it returns. The exception is then handled like any other failure (retried, dead-lettered).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from broker.errors import TimeLimitExceeded
from broker.middleware.middleware import Middleware
from broker.threading import current_platform, raise_thread_exception, supported_platforms

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.proxy import MessageProxy
    from broker.worker import Worker

log = logging.getLogger(__name__)


class TimeLimit(Middleware):
    actor_options = frozenset({"time_limit"})
    message_options = frozenset({"time_limit"})

    def __init__(self, *, time_limit: int | None = None, interval: int = 100) -> None:
        self.time_limit = time_limit  # default for actors that set none; None means no limit
        self.interval = interval / 1000
        self._deadlines: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_process_boot(self, broker: Broker) -> None:
        if current_platform not in supported_platforms:
            message = f"TimeLimit cannot kill threads on your current platform ({current_platform!r})."
            warnings.warn(message, RuntimeWarning, stacklevel=2)

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._monitor, name="time-limit", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()

    def validate_message_option(self, name: str, value: object) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"message option {name!r} must be a positive number of milliseconds, not {value!r}")

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        # the message's limit overrides the actor's, which overrides the middleware's default
        actor_options = broker.get_actor(message.actor_name).options
        limit = message.options.get("time_limit", actor_options.get("time_limit", self.time_limit))
        if limit:
            with self._lock:
                self._deadlines[threading.get_ident()] = time.monotonic() + limit / 1000

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    def _monitor(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            with self._lock:
                expired = [ident for ident, deadline in self._deadlines.items() if deadline <= now]
                for ident in expired:
                    del self._deadlines[ident]
                    log.warning("time limit exceeded; interrupting thread %s", ident)
                    raise_thread_exception(ident, TimeLimitExceeded)
