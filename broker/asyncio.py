"""Running ``async def`` actors: one event loop thread per worker process (Dramatiq's names).

A worker thread runs an async actor by handing its coroutine to the process's event loop thread
(:func:`async_to_sync`) and waiting for the outcome. So the actor's messages keep every guarantee
of a sync actor: its worker thread is busy until the coroutine finishes, order per key, retries
and commits are unchanged, and a time limit lands in the waiting worker thread, which then
cancels the coroutine (its ``finally`` blocks and ``except CancelledError`` run) before the
failure is handled like any other. The loop thread is started by the
:class:`~broker.middleware.AsyncIO` middleware when a worker boots, so a process that never runs
a worker (the API) never starts one.

Without a running loop thread an async actor cannot run: calling one raises ``RuntimeError``,
and a broker without the ``AsyncIO`` middleware refuses to declare one at all (a message that
could not run must never be consumed and committed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from broker.errors import Interrupt

__all__ = ["EventLoopThread", "async_to_sync", "get_event_loop_thread", "set_event_loop_thread"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 1.0  # how long an interrupted coroutine may take to unwind before the worker moves on

_event_loop_thread: EventLoopThread | None = None


def get_event_loop_thread() -> EventLoopThread | None:
    """The process's event loop thread (None until a worker with ``AsyncIO`` booted)."""
    return _event_loop_thread


def set_event_loop_thread(thread: EventLoopThread | None) -> None:
    """Make ``thread`` the one :func:`async_to_sync` runs coroutines on (None: no loop)."""
    global _event_loop_thread
    _event_loop_thread = thread


def async_to_sync(async_fn: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Wrap ``async_fn`` so that calling it runs it on the event loop thread and waits for it.

    Raises ``RuntimeError`` when no loop thread is running (the coroutine is not even created).
    """

    @functools.wraps(async_fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        thread = get_event_loop_thread()
        if thread is None:
            raise RuntimeError(
                "no event loop thread is running for this async actor: add the AsyncIO middleware "
                "to the broker (broker.add_middleware(AsyncIO())); a worker starts the loop when it boots"
            )
        return thread.run_coroutine(async_fn(*args, **kwargs))

    return wrapper


class EventLoopThread(threading.Thread):
    """A daemon thread running one asyncio event loop, for the coroutines of every worker thread.

    Parameters:
      logger: where start and stop are logged (this module's logger by default).
      interrupt_check_ival: how often (s) a waiting worker thread wakes up, so that an
        asynchronously raised :class:`~broker.errors.Interrupt` (a time limit) lands promptly.
    """

    def __init__(self, logger: logging.Logger | None = None, interrupt_check_ival: float = 0.1) -> None:
        super().__init__(name="event-loop", daemon=True)
        self.logger = logger or log
        self.interrupt_check_ival = interrupt_check_ival
        self.loop = asyncio.new_event_loop()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def start(self, *, timeout: float | None = None) -> None:
        """Start the loop and return once it runs. Raises ``RuntimeError`` if it did not within
        ``timeout`` seconds."""
        super().start()
        running = threading.Event()
        self.loop.call_soon_threadsafe(running.set)
        if not running.wait(timeout):
            raise RuntimeError("Event loop failed to start within the timeout")
        self.logger.debug("event loop running")

    def stop(self) -> None:
        """Stop the loop (coroutines still pending are abandoned) and wait for the thread."""
        if self.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.join()

    def run_coroutine(self, coro: Coroutine[Any, Any, R] | Awaitable[R]) -> R:
        """Run ``coro`` on the loop; return its result or raise its exception, in this thread.

        An :class:`~broker.errors.Interrupt` raised in this thread while it waits cancels the
        coroutine, waits (up to ``CANCEL_GRACE_S``) for it to unwind, then propagates. It may land
        at any bytecode, even before the coroutine was scheduled: the start and the cancel are
        both callbacks on the loop, which runs them in order, so the cancel always finds the
        task started (or the coroutine never started, and closes it).
        Raises ``RuntimeError`` when the loop is not running.
        """
        if not self.loop.is_running():
            if asyncio.iscoroutine(coro):
                coro.close()  # never started: no "was never awaited" warning
            raise RuntimeError("Event loop is not running")
        box: list[concurrent.futures.Future[R]] = [concurrent.futures.Future()]  # emptied when done
        outcome = box[0]
        unwound = threading.Event()
        tasks: list[asyncio.Task[R]] = []

        async def guarded() -> R:
            try:
                return await coro
            finally:
                unwound.set()

        def settle(task: asyncio.Task[R]) -> None:
            if not box:
                return  # the waiter gave up (interrupted): nobody reads the outcome
            if task.cancelled():
                box[0].cancel()
            elif task.exception() is not None:
                box[0].set_exception(task.exception())
            else:
                box[0].set_result(task.result())

        def start() -> None:  # on the loop, in a copy of this thread's context (CurrentMessage)
            task = self.loop.create_task(guarded())
            task.add_done_callback(settle)
            tasks.append(task)

        def cancel() -> None:  # on the loop, after start() if start() was scheduled at all
            if tasks:
                tasks[0].cancel()
            else:
                if asyncio.iscoroutine(coro):
                    coro.close()
                unwound.set()

        try:
            self.loop.call_soon_threadsafe(start)
            # short waits, so that an Interrupt raised in this thread is seen between them
            while not unwound.wait(self.interrupt_check_ival):
                pass
            return outcome.result()
        except Interrupt:
            self.loop.call_soon_threadsafe(cancel)
            if not unwound.wait(CANCEL_GRACE_S):
                self.logger.warning("an interrupted coroutine did not finish unwinding within %.1f s", CANCEL_GRACE_S)
            raise
        finally:
            box.clear()  # the outcome holds the exception, whose traceback holds this frame:
            del outcome  # no reference cycle
