"""``async def`` actors (issue 23, item 1): they run on the worker process's event loop thread,
with retries, time limits and commits as for a plain function, on the StubBroker and on Kafka
(conftest.env). An actor kind the worker cannot run is refused when declared, never consumed."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from broker import StubBroker, Worker, actor
from broker.asyncio import EventLoopThread, async_to_sync, get_event_loop_thread, set_event_loop_thread
from broker.errors import Interrupt, TimeLimitExceeded
from broker.middleware import AsyncIO, Retries, TimeLimit
from tests.helpers import wait_for


@pytest.fixture
def async_env(env):
    env.broker.add_middleware(AsyncIO())
    return env


def test_an_async_actor_runs_on_the_event_loop_thread_and_its_offset_is_committed(async_env):
    env = async_env
    ran = []

    @actor(broker=env.broker, topic=env.topic)
    async def fetch(n):
        await asyncio.sleep(0.01)  # a real await: the body runs past its first suspension
        ran.append((n, threading.current_thread().name))

    env.start_worker()
    for n in range(3):
        fetch.send(n)
    wait_for(lambda: len(ran) == 3, message=str(ran))
    assert sorted(ran) == [(0, "event-loop"), (1, "event-loop"), (2, "event-loop")]
    wait_for(lambda: sum(env.committed().values()) == 3, message="offsets committed after the coroutines ran")
    assert env.dead_letters() == []


def test_a_failing_async_actor_is_retried_like_a_sync_one(async_env):
    env = async_env
    attempts = []

    @actor(broker=env.broker, topic=env.topic, max_retries=3, min_backoff=10)
    async def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "ok"

    env.start_worker()
    flaky.send()
    wait_for(lambda: len(attempts) == 3, message=f"{len(attempts)} attempts")
    wait_for(lambda: sum(env.committed().values()) == 1, message="committed after the third attempt")
    assert env.dead_letters() == []


def test_an_async_actor_over_its_time_limit_is_cancelled_cleaned_up_and_dead_lettered(async_env):
    env = async_env
    cleaned_up = threading.Event()

    @actor(broker=env.broker, topic=env.topic, time_limit=300, max_retries=0)
    async def stuck():
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.set()  # the coroutine was cancelled, not abandoned on the loop

    env.start_worker()
    stuck.send()
    wait_for(lambda: len(env.dead_letters()) == 1, message="the interrupted message dead-lettered")
    (letter,) = env.dead_letters()
    assert letter["exception.type"] == "broker.errors.TimeLimitExceeded"
    assert cleaned_up.is_set()


def test_an_async_actor_is_refused_at_declaration_without_the_asyncio_middleware():
    broker = StubBroker(middleware=[Retries(), TimeLimit()])  # AsyncIO is in the defaults
    with pytest.raises(ValueError, match="AsyncIO"):

        @actor(broker=broker)
        async def orphan():
            pass

    assert "orphan" not in broker.actors


def test_generator_functions_are_refused_as_actors():
    broker = StubBroker()
    with pytest.raises(ValueError, match="generator"):

        @actor(broker=broker)
        def numbers():
            yield 1

    with pytest.raises(ValueError, match="generator"):

        @actor(broker=broker)
        async def stream():
            yield 1


def test_a_plain_function_returning_a_coroutine_fails_instead_of_being_committed_as_done(env):
    ran = []

    async def body():
        ran.append(1)

    @actor(broker=env.broker, topic=env.topic, max_retries=0)
    @functools.wraps(body)
    def disguised():
        return body()  # not async def: the worker would get a coroutine and drop it

    env.start_worker()
    disguised.send()
    wait_for(lambda: len(env.dead_letters()) == 1, message="dead-lettered, not committed as done")
    (letter,) = env.dead_letters()
    assert letter["exception.type"] == "builtins.TypeError" and "awaitable" in letter["exception.message"]
    assert ran == []


def test_workers_in_one_process_share_the_loop_until_the_last_one_stops():
    first, second = StubBroker(), StubBroker()
    for b in (first, second):
        b.add_middleware(AsyncIO())

    @actor(broker=first, topic="a")
    async def one():
        return None

    @actor(broker=second, topic="b")
    async def two():
        return None

    w1, w2 = Worker(first), Worker(second)
    w1.start()
    w2.start()
    try:
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None and loop_thread.is_alive()
        w1.stop()
        assert get_event_loop_thread() is loop_thread and loop_thread.is_alive()
        two.send()
        second.join("b", timeout=10_000)
    finally:
        w2.stop()
    assert get_event_loop_thread() is None and not loop_thread.is_alive()


def test_calling_an_async_actor_without_a_loop_thread_says_what_is_missing():
    async def add(x, y):
        return x + y

    assert get_event_loop_thread() is None
    with pytest.raises(RuntimeError, match="AsyncIO"):
        async_to_sync(add)(1, 2)


def test_the_loop_thread_runs_coroutines_returns_results_and_raises_their_exceptions():
    thread = EventLoopThread()
    thread.start(timeout=1.0)
    set_event_loop_thread(thread)
    try:

        async def where():
            return threading.get_ident()

        async def fails():
            raise TimeoutError("inside the coroutine")  # not confused with waiting for it

        assert async_to_sync(where)() == thread.ident
        with pytest.raises(TimeoutError, match="inside the coroutine"):
            async_to_sync(fails)()
    finally:
        thread.stop()
        set_event_loop_thread(None)
    assert not thread.is_alive()


def test_an_interrupt_in_the_waiting_thread_cancels_the_coroutine_and_propagates():
    thread = EventLoopThread(interrupt_check_ival=0.01)
    thread.start(timeout=1.0)
    unwound = threading.Event()
    waiter = threading.get_ident()

    async def long_running():
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(waiter), ctypes.py_object(TimeLimitExceeded))
        try:
            await asyncio.sleep(30)
        finally:
            unwound.set()

    try:
        with pytest.raises(Interrupt):
            thread.run_coroutine(long_running())
        assert unwound.is_set()
    finally:
        thread.stop()
