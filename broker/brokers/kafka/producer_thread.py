"""kafka-python's producer on a native OS thread of its own, for processes gevent has patched
(opt-in: ``KafkaBroker(producer_thread=True)``).

Why one would: under gevent the producer's sender is one greenlet among the ready ones. A loaded gevent
loop runs every ready greenlet before it polls the sockets again, so an acknowledgement that has
arrived waits its turn behind every request being served, and sends stall together and then
finish at once (a convoy: ``docs/performance.md``). On a native thread the sender runs when the
interpreter switches threads (every 5 ms at most, ``sys.getswitchinterval``), whatever the
loop has queued.

Why it is not the default: measured in the API (``docs/performance.md``), the acknowledgements
came sooner (freshness p99 down by about a third), but cache-hit reads got several times slower
under load: every socket call of the request loop gives up the interpreter lock, and getting it
back from the producer's thread costs up to a switch interval each time. It pays where a process
serves writes only.

How, and the trap it avoids: kafka-python is imported after ``monkey.patch_all()``, so its
sockets, selectors, locks and "threads" are gevent's. They work in any OS thread that runs its
own gevent hub, as long as every object is used only from that thread. So the producer is built,
used, flushed and closed only on its own thread (started with the unpatched
``_thread.start_new_thread``), where its sender is a greenlet of that thread's hub. Callers never
touch it: a send is handed over in a queue, with that hub's thread-safe wake-up (an ``async``
watcher), and its outcome comes back through the caller's hub's ``run_callback_threadsafe``,
which wakes the waiting greenlet. Nothing else crosses between the threads.

:class:`ThreadedProducer` offers the part of ``KafkaProducer``'s interface the broker uses:
``send(...).get(timeout)``, ``flush(timeout)``, ``close(timeout)``. Errors the producer raises at
``send`` (a record too large, metadata not available in time) arrive at ``get`` instead.
"""

from __future__ import annotations

import atexit
import collections
from typing import Any

import gevent
import gevent.event
from gevent import monkey
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError


class _Outcome:
    """A send's (or a flush's) result, set from the producer's thread, awaited in the caller's hub."""

    def __init__(self) -> None:
        self._result: gevent.event.AsyncResult[Any] = gevent.event.AsyncResult()
        self._loop = gevent.get_hub().loop

    def set(self, value: Any) -> None:  # from the producer's thread
        self._loop.run_callback_threadsafe(self._result.set, value)

    def fail(self, exc: BaseException) -> None:  # from the producer's thread
        self._loop.run_callback_threadsafe(self._result.set_exception, exc)

    def get(self, timeout: float | None = None) -> Any:
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise KafkaTimeoutError(f"no acknowledgement within {timeout} s") from exc


class ThreadedProducer:
    """A ``KafkaProducer`` built and driven on a native thread (module docstring)."""

    def __init__(self, options: dict[str, Any], connect_timeout_s: float) -> None:
        self._jobs: collections.deque[tuple[str, tuple[Any, ...], _Outcome]] = collections.deque()
        self._closed = False
        self._producer: KafkaProducer | None = None
        self._wakeup: Any = None
        ready = _Outcome()
        monkey.get_original("_thread", "start_new_thread")(self._run, (options, ready))
        ready.get(timeout=connect_timeout_s + 5)  # KafkaProducer's own bootstrap timeout comes first
        atexit.register(self.close, 5.0)  # before kafka-python's own handler (LIFO), on this thread

    # ------------------------------------------------------------ callers' side

    def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> _Outcome:
        outcome = _Outcome()
        self._submit("send", (topic, value, key, headers), outcome)
        return outcome

    def flush(self, timeout: float | None = None) -> None:
        outcome = _Outcome()
        self._submit("flush", (timeout,), outcome)
        outcome.get(None if timeout is None else timeout + 1)

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        outcome = _Outcome()
        self._submit("close", (timeout,), outcome)
        try:
            outcome.get(None if timeout is None else timeout + 1)
        except KafkaTimeoutError:
            pass  # the thread goes on closing; unsent records are dropped as kafka-python's close drops them

    def _submit(self, what: str, args: tuple[Any, ...], outcome: _Outcome) -> None:
        self._jobs.append((what, args, outcome))
        self._wakeup.send()  # thread-safe: wakes the producer thread's hub

    # ------------------------------------------------------------ the producer's thread

    def _run(self, options: dict[str, Any], ready: _Outcome) -> None:
        hub = gevent.get_hub()  # this thread's own hub
        pending = gevent.event.Event()
        self._wakeup = hub.loop.async_()
        self._wakeup.start(pending.set)
        try:
            self._producer = KafkaProducer(**options)
        except BaseException as exc:  # the caller raises it (BrokerUnavailable)
            self._wakeup.stop()
            ready.fail(exc)
            return
        ready.set(True)
        while True:
            pending.wait()
            pending.clear()
            while self._jobs:
                what, args, outcome = self._jobs.popleft()
                if what == "send":
                    gevent.spawn(self._send, args, outcome)  # a send may wait for metadata: never the others
                elif what == "flush":
                    gevent.spawn(self._call, self._producer.flush, args, outcome)
                else:
                    self._call(self._producer.close, args, outcome)
                    self._wakeup.stop()
                    return

    def _send(self, args: tuple[Any, ...], outcome: _Outcome) -> None:
        topic, value, key, headers = args
        try:
            assert self._producer is not None  # built in _run before any job is taken
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except BaseException as exc:
            outcome.fail(exc)
            return
        future.add_callback(outcome.set)
        future.add_errback(outcome.fail)

    @staticmethod
    def _call(method: Any, args: tuple[Any, ...], outcome: _Outcome) -> None:
        try:
            outcome.set(method(timeout=args[0]))
        except BaseException as exc:
            outcome.fail(exc)
