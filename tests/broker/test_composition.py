"""Pipelines, groups and completion callbacks (issue 12, item 4), with Dramatiq's names: on the
StubBroker with in-memory backends, and on Kafka with results and the barrier in Redis."""

from __future__ import annotations

import pytest

from broker import StubBroker, actor, group, pipeline
from broker.middleware import GroupCallbacks
from broker.rate_limits import Barrier
from broker.rate_limits.backends import RedisBackend as RedisLimits
from broker.rate_limits.backends import StubBackend as StubLimits
from broker.results import Results, ResultTimeout
from broker.results.backends import RedisBackend, StubBackend
from tests.helpers import wait_for


@pytest.fixture
def backends(env, request):
    """(results backend, barrier backend), installed on the broker as Results and GroupCallbacks."""
    if env.kind == "stub":
        results, limits = StubBackend(), StubLimits()
    else:
        client = request.getfixturevalue("redis_client")
        results, limits = RedisBackend(client=client), RedisLimits(client=client)
    env.broker.add_middleware(Results(backend=results))
    env.broker.add_middleware(GroupCallbacks(limits))
    return results, limits


def test_a_pipeline_passes_each_result_to_the_next_step(env, backends):
    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def add(x, y):
        return x + y

    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def double(x):
        return 2 * x

    env.start_worker()
    pipe = pipeline([add.message(1, 2), double.message(), add.message(10)], broker=env.broker).run()
    assert pipe.get_result(block=True, timeout=30_000) == 16  # (1 + 2) * 2 + 10
    assert list(pipe.get_results(block=True, timeout=5_000)) == [3, 6, 16]
    assert len(pipe) == 3


def test_pipe_ignore_keeps_the_previous_result_out(env, backends):
    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def make():
        return "made"

    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def echo(*args):
        return list(args)

    @actor(broker=env.broker, topic=env.topic, store_results=True, pipe_ignore=True)
    def fresh():
        return "fresh"

    env.start_worker()
    ignoring = pipeline([make.message(), echo.message_with_options(args=("own",), pipe_ignore=True)], broker=env.broker)
    assert ignoring.run().get_result(block=True, timeout=30_000) == ["own"]
    by_actor = pipeline([make.message(), fresh.message()], broker=env.broker)
    assert by_actor.run().get_result(block=True, timeout=30_000) == "fresh"


def test_pipelines_compose_and_a_failed_step_ends_the_pipeline(env, backends):
    ran = []

    @actor(broker=env.broker, topic=env.topic, store_results=True, max_retries=0)
    def step(x, fail=False):
        ran.append(x)
        if fail:
            raise ValueError("step failed")
        return x

    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def never(*args):
        ran.append("never")

    env.start_worker()
    inner = pipeline([step.message(1), step.message_with_options(kwargs={"fail": True})], broker=env.broker)
    outer = inner | never.message()
    assert len(outer) == 3
    outer.run()
    wait_for(lambda: env.dead_letters(), timeout=30)
    with pytest.raises(ResultTimeout):
        outer.get_result(block=True, timeout=500)
    assert ran == [1, 1]


def test_a_group_runs_its_members_and_gives_their_results_in_order(env, backends):
    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def square(x):
        return x * x

    env.start_worker()
    jobs = group([square.message(n) for n in range(8)], broker=env.broker).run()
    jobs.wait(timeout=30_000)
    assert list(jobs.get_results(block=True, timeout=5_000)) == [n * n for n in range(8)]
    assert len(jobs) == 8


def test_a_completion_callback_runs_once_after_every_member_finished(env, backends):
    finished, callbacks = [], []

    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def work(n):
        finished.append(n)
        return n

    @actor(broker=env.broker, topic=env.topic)
    def done(label):
        callbacks.append((label, sorted(finished)))

    env.start_worker()
    members = [work.message(n) for n in range(5)]
    members.append(
        pipeline([work.message(10), work.message_with_options(args=(), pipe_ignore=False)], broker=env.broker)
    )
    jobs = group(members, broker=env.broker)
    jobs.add_completion_callback(done.message("all done"))
    jobs.run()
    wait_for(lambda: callbacks, timeout=30)
    assert callbacks == [("all done", [0, 1, 2, 3, 4, 10, 10])]
    env.workers[0].join(timeout_ms=10_000)
    assert len(callbacks) == 1


def test_a_member_that_fails_for_good_means_no_callback(env, backends):
    callbacks = []

    @actor(broker=env.broker, topic=env.topic, max_retries=0)
    def member(ok):
        if not ok:
            raise ValueError("bad member")

    @actor(broker=env.broker, topic=env.topic)
    def done():
        callbacks.append(1)

    env.start_worker()
    jobs = group([member.message(True), member.message(False), member.message(True)], broker=env.broker)
    jobs.add_completion_callback(done.message())
    jobs.run()
    wait_for(lambda: env.dead_letters(), timeout=30)
    env.workers[0].join(timeout_ms=10_000)
    assert callbacks == []


def test_callbacks_need_the_group_callbacks_middleware():
    broker = StubBroker()

    @actor(broker=broker)
    def task():
        pass

    jobs = group([task.message()], broker=broker)
    jobs.add_completion_callback(task.message())
    with pytest.raises(RuntimeError, match="GroupCallbacks"):
        jobs.run()


def test_a_barrier_counts_distinct_members_and_answers_its_completer_again(env, backends):
    _, limits = backends
    barrier = Barrier(limits, f"barrier-{env.topic}", 3)
    assert [barrier.arrive("a"), barrier.arrive("a"), barrier.arrive("b")] == [False, False, False]
    assert barrier.arrive("c") is True  # the third distinct member
    assert barrier.arrive("c") is True  # a redelivery of the completer: it may act again
    assert barrier.arrive("a") is False and barrier.arrive("d") is False
