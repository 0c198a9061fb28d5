"""Reads first (core/turns.py): queued writes run after the reads ready in the same loop turn,
and for at most one budget per turn."""

from __future__ import annotations

import time

import gevent
import gevent.socket
import pytest
from gevent.hub import get_hub

from core import turns
from core.turns import Turns


def _when_the_read_ran(give_way, stretch: float = 0.0) -> tuple[object, object]:
    """A writer gives way 200 times, each stretch burning ``stretch`` seconds of CPU, and makes a
    reader's socket readable after its 51st stretch: what ran just before and just after the read."""
    a, b = gevent.socket.socketpair()
    order: list[object] = []

    def reader() -> None:
        a.recv(1)
        order.append("read")

    def writer() -> None:
        for i in range(200):
            give_way()
            end = time.perf_counter() + stretch
            while time.perf_counter() < end:
                pass
            order.append(i)
            if i == 50:
                b.send(b"x")

    gevent.joinall([gevent.spawn(reader), gevent.spawn(writer)], raise_error=True)
    a.close()
    b.close()
    k = order.index("read")
    return order[k - 1], (order[k + 1] if k + 1 < len(order) else None)


def test_a_read_that_becomes_ready_runs_before_the_next_queued_write():
    assert _when_the_read_ran(Turns(get_hub(), budget=0).wait) == (50, 51)


def test_a_ready_read_waits_for_at_most_one_budget_of_writes():
    """1 ms of writes per loop turn, each stretch 0.3 ms: the read runs within 4 more stretches
    (wall time only makes the stretches longer, never more of them)."""
    before, _ = _when_the_read_ran(Turns(get_hub(), budget=0.001).wait, stretch=0.0003)
    assert 50 <= before <= 54


def test_without_turns_a_ready_read_waits_behind_every_ready_write():
    """The convoy turns prevent: gevent.sleep(0) keeps the writer ahead of the reader's socket."""
    before, _ = _when_the_read_ran(lambda: gevent.sleep(0))
    assert before != 50


def test_the_idle_watcher_stops_when_no_write_waits():
    """An active idle watcher would keep the loop from ever blocking (a spinning process)."""
    queue = Turns(get_hub())
    gevent.joinall([gevent.spawn(queue.wait) for _ in range(5)])
    assert queue.waiting == 0
    assert not queue.active


def test_a_write_killed_while_queued_leaves_the_queue():
    queue = Turns(get_hub())
    blocked = gevent.spawn(queue.wait)
    gevent.sleep(0)  # it is queued now; kill it before an idle turn releases it
    assert queue.waiting == 1
    blocked.kill()
    assert queue.waiting == 0
    assert not queue.active


def test_oldest_wait_is_how_long_the_first_queued_write_has_waited():
    queue = Turns(get_hub())
    assert queue.oldest_wait() == 0.0
    blocked = gevent.spawn(queue.wait)
    gevent.sleep(0)
    first = queue.oldest_wait()
    assert first >= 0.0
    assert queue.oldest_wait() >= first
    blocked.kill()
    assert queue.oldest_wait() == 0.0


def test_reads_first_stays_off_outside_a_patched_process(monkeypatch):
    monkeypatch.setattr(turns, "_enabled", {})
    monkeypatch.setattr(Turns, "wait", lambda self: pytest.fail("a write waited in an unpatched process"))
    turns.enable(True)
    assert not turns.enabled()
    turns.give_way()
    assert turns.oldest_wait() == 0.0


def test_reads_first_is_turned_on_and_off_per_process(monkeypatch):
    monkeypatch.setattr(turns, "_enabled", {})
    monkeypatch.setattr(turns.monkey, "is_module_patched", lambda name: True)
    assert not turns.enabled()  # off until the app turns it on
    turns.enable(True)
    assert turns.enabled()
    turns.enable(False)
    assert not turns.enabled()


def test_a_next_request_turn_comes_after_the_ready_sockets_unlike_sleep_0():
    """The keep-alive yield (core/gunicorn_worker.py): a greenlet about to read its next request
    lets a socket that became ready run first."""
    assert _when_the_read_ran(Turns(get_hub(), budget=0, priority=-1).wait) == (50, 51)


def test_next_requests_go_before_queued_writes():
    hub = get_hub()
    writes, next_requests = Turns(hub, budget=0), Turns(hub, budget=0, priority=-1)
    order: list[str] = []

    def queued(queue: Turns, name: str) -> None:
        queue.wait()
        order.append(name)

    first = gevent.spawn(queued, writes, "write")
    second = gevent.spawn(queued, next_requests, "next request")
    gevent.joinall([first, second])
    assert order == ["next request", "write"]
