"""Results (issue 12, item 3), with Dramatiq's names: on the StubBroker with the in-memory
backend, and on Kafka with results through Redis (conftest.env runs each test on both)."""

from __future__ import annotations

import threading

import pytest

from broker import actor
from broker.results import ResultFailure, ResultMissing, Results, ResultTimeout
from broker.results.backends import RedisBackend, StubBackend
from tests.helpers import wait_for


@pytest.fixture
def backend(env, request):
    backend = StubBackend() if env.kind == "stub" else RedisBackend(client=request.getfixturevalue("redis_client"))
    env.broker.add_middleware(Results(backend=backend))
    return backend


def test_a_result_is_stored_and_read_back_blocking(env, backend):
    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def add(x, y):
        return x + y

    env.start_worker()
    message = add.send(1, 2)
    assert message.get_result(backend=backend, block=True, timeout=20_000) == 3
    assert message.get_result(backend=backend) == 3  # still there for other readers


def test_no_result_yet_is_missing_without_blocking_and_a_timeout_when_blocking(env, backend):
    release = threading.Event()

    @actor(broker=env.broker, topic=env.topic, store_results=True)
    def slow():
        release.wait(20)
        return "done"

    env.start_worker()
    message = slow.send()
    with pytest.raises(ResultMissing):
        message.get_result(backend=backend)
    with pytest.raises(ResultTimeout):
        message.get_result(backend=backend, block=True, timeout=300)
    release.set()
    assert message.get_result(backend=backend, block=True, timeout=20_000) == "done"


def test_an_actor_that_fails_for_good_gives_a_result_failure(env, backend):
    @actor(broker=env.broker, topic=env.topic, store_results=True, max_retries=0)
    def broken():
        raise ValueError("no such device")

    env.start_worker()
    message = broken.send()
    with pytest.raises(ResultFailure) as failure:
        message.get_result(backend=backend, block=True, timeout=20_000)
    # as Dramatiq words it: the class name, not its module path
    assert failure.value.orig_exc_type == "ValueError"
    assert failure.value.orig_exc_msg == "no such device"
    assert str(failure.value) == "actor raised ValueError: no such device"


def test_results_expire(env, backend):
    @actor(broker=env.broker, topic=env.topic, store_results=True, result_ttl=300)
    def short_lived():
        return 1

    env.start_worker()
    message = short_lived.send()
    assert message.get_result(backend=backend, block=True, timeout=20_000) == 1

    def gone() -> bool:
        try:
            message.get_result(backend=backend)
        except ResultMissing:
            return True
        return False

    wait_for(gone, timeout=10, message="the result expired")


def test_an_actor_without_store_results_stores_nothing(env, backend):
    ran = threading.Event()

    @actor(broker=env.broker, topic=env.topic)
    def quiet():
        ran.set()
        return 42

    env.start_worker()
    message = quiet.send()
    wait_for(ran.is_set, timeout=20)
    wait_for(lambda: sum(env.committed().values()) == 1, timeout=20, message="finished")
    with pytest.raises(ResultMissing):
        message.get_result(backend=backend)
