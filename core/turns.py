"""Reads first: inside one gevent process, a write's next stretch of CPU waits until the reads
that are ready in this loop turn have run, so a cache-hit read never queues behind the writes
in progress.

Why: a gevent hub runs every ready greenlet before it polls its sockets again. A ``POST
/events`` costs about twice a cache-hit ``GET`` in CPU and comes back to the CPU three times
(admitted, back from the rate-limit script, back from Kafka's acknowledgement); under ingest
dozens of them are ready at once, and a ``GET`` whose request or Redis reply has arrived waits
for all of them (the convoy in docs/performance.md). Reads are the promise ("devices see
low-latency reads even during bursts of ingest traffic"); a write's 202 can take a little longer.

How: a write calls :func:`give_way` before each stretch and joins a FIFO queue. Once per loop
turn, after every socket event of that turn was handled (a *check* watcher at libev's lowest
priority, so it runs after the turn's reads), queued writes are released one after another
for up to ``budget`` seconds (1 ms); then the loop polls again, without blocking while writes
wait (an idle watcher). A read that became ready meanwhile therefore waits for at most one
budget of writes, and the writes keep their order among themselves. An idle turn alone (libev
runs idle watchers only when nothing else is pending) was tried first: under a write-only load
the writes' own socket events left few idle turns, and POST throughput fell by a third.

The trade, by design: a process busy with reads runs writes only as the reads leave room. How
long the oldest write has waited (:func:`oldest_wait`) is the writes' own overload signal: the
API sheds new writes at once (``503`` + ``Retry-After``) while it exceeds
``API_MAX_WRITE_WAIT_MS`` (app/overload.py), instead of queueing them until clients give up.

The API turns it on per process (:func:`enable`, ``API_READS_FIRST=1``; opt-in, as it did not pay
under the open-loop mix on the 2-core machine: docs/performance.md); off, or outside a
gevent-patched process (tests, scripts, the worker), :func:`give_way` returns at once.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import gevent
from gevent import monkey
from gevent.hub import Waiter, get_hub


class Turns:
    """The writes of one hub waiting for their turn after the reads (module docstring)."""

    def __init__(self, hub: Any, budget: float = 0.001, priority: int = -2) -> None:
        self._hub = hub
        self.budget = budget
        self._waiting: deque[tuple[Waiter[None], float]] = deque()
        self._after_reads = hub.loop.check()
        self._after_reads.priority = priority  # -2, libev's lowest: after every other event of the turn
        self._no_block = hub.loop.idle()  # while writes wait, the loop polls without blocking

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> bool:
        return self._after_reads.active or self._no_block.active

    def oldest_wait(self) -> float:
        """Seconds the first queued write has waited (0 when none waits)."""
        return time.monotonic() - self._waiting[0][1] if self._waiting else 0.0

    def wait(self) -> None:
        """Block the calling greenlet until a loop turn's reads have run and its turn comes."""
        entry: tuple[Waiter[None], float] = (Waiter(self._hub), time.monotonic())
        self._waiting.append(entry)
        if not self._after_reads.active:
            self._after_reads.start(self._release)
            self._no_block.start(_nothing)
        try:
            entry[0].get()
        except BaseException:  # killed or timed out while queued: leave the queue
            if entry in self._waiting:
                self._waiting.remove(entry)
                self._stop_if_empty()
            raise

    def _release(self) -> None:
        """In the hub, once per loop turn after its reads: run queued writes, each until it
        blocks again, for up to ``budget`` seconds."""
        deadline = time.perf_counter() + self.budget
        while self._waiting:
            waiter, _ = self._waiting.popleft()
            waiter.switch(None)
            if time.perf_counter() >= deadline:
                break
        self._stop_if_empty()

    def _stop_if_empty(self) -> None:
        if not self._waiting:  # active watchers with nothing to do would keep the loop spinning
            self._after_reads.stop()
            self._no_block.stop()


def _nothing() -> None:
    """The idle watcher's callback: its only job is to keep the loop from blocking."""


_enabled: dict[int, bool] = {}  # per process: gunicorn forks its workers after the app's import


def enable(on: bool = True) -> None:
    """Turn reads-first on (or off) for this process; it stays off where gevent did not patch
    the process (threads or a plain process have no shared loop to protect)."""
    _enabled[os.getpid()] = on and monkey.is_module_patched("socket")


def enabled() -> bool:
    return _enabled.get(os.getpid(), False)


def _turns() -> Turns | None:
    hub = get_hub()
    if gevent.getcurrent() is hub:
        return None
    turns = getattr(hub, "_reads_first_turns", None)
    if turns is None:
        turns = hub._reads_first_turns = Turns(hub)  # type: ignore[attr-defined]  # ours: one per hub
    return turns


def next_request_turn() -> None:
    """Before a keep-alive connection's next request: wait until this loop turn's socket events
    have run (core/gunicorn_worker.py). ``gevent.sleep(0)`` queued the greenlet among gevent's
    callbacks, which run before the next poll, so greenlets whose next request and Redis reply
    were already there served request after request while those waiting on a socket waited for
    the whole run (the tail at 128 connections, docs/performance.md). Ahead of the writes'
    queue (priority -1 against -2), so a read's next request still comes first."""
    hub = get_hub()
    if gevent.getcurrent() is hub:
        return
    turns = getattr(hub, "_next_request_turns", None)
    if turns is None:
        turns = hub._next_request_turns = Turns(hub, priority=-1)  # type: ignore[attr-defined]  # ours, likewise
    turns.wait()


def give_way() -> None:
    """Let every ready read run before the calling write goes on (module docstring)."""
    if enabled() and (turns := _turns()) is not None:
        turns.wait()


def oldest_wait() -> float:
    """Seconds the longest-waiting write of this process has been waiting for its turn."""
    if not enabled():
        return 0.0
    turns = getattr(get_hub(), "_reads_first_turns", None)
    return turns.oldest_wait() if turns is not None else 0.0
