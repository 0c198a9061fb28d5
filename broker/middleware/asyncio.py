"""The AsyncIO middleware: gives each worker process the event loop thread async actors run on."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from broker.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from broker.middleware.middleware import Middleware

if TYPE_CHECKING:
    from broker.broker import Broker
    from broker.worker import Worker

log = logging.getLogger(__name__)


class AsyncIO(Middleware):
    """``broker.add_middleware(AsyncIO())`` before declaring ``async def`` actors.

    The loop thread starts when a worker boots (after a fork, in the process that runs it) and
    stops when the last worker of the process has shut down: several workers in one process (as
    tests start them) share one loop.
    """

    _lock = threading.Lock()
    _workers = 0  # workers of this process using the loop thread

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        with AsyncIO._lock:
            AsyncIO._workers += 1
            if get_event_loop_thread() is None:
                thread = EventLoopThread(log)
                thread.start(timeout=1.0)
                set_event_loop_thread(thread)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        with AsyncIO._lock:
            AsyncIO._workers = max(0, AsyncIO._workers - 1)
            thread = get_event_loop_thread()
            if AsyncIO._workers == 0 and thread is not None:
                thread.stop()
                set_event_loop_thread(None)
