"""A dependency's failure is not the message's: the worker waits it out, in order, without
counting attempts or dead-lettering, and goes on by itself once the dependency is back. The worker
tests run on the StubBroker and on real Kafka (see conftest.env)."""

from __future__ import annotations

import random
import threading

import pytest
import redis
import sqlalchemy.exc

from broker import actor, transient
from tests.helpers import wait_for


class UpstreamDown(Exception):
    """An application's own 'the service I call is down'."""


def test_connection_failures_are_waited_out_without_counting_attempts_or_dead_letters(env):
    calls, order = [], []

    @actor(broker=env.broker, topic=env.topic, max_retries=1, min_backoff=10)
    def store(n):
        calls.append(n)
        if n == 1 and calls.count(1) <= 6:  # six failures: far past max_retries
            raise ConnectionRefusedError("database is down")
        order.append(n)

    env.start_worker(dependency_min_backoff_ms=10, dependency_max_backoff_ms=40)
    store.send_with_options(args=(1,), key="device")
    store.send_with_options(args=(2,), key="device")  # same key: must wait behind the first
    wait_for(lambda: order == [1, 2], message=f"order {order}, calls {calls}")
    assert calls.count(1) == 7 and env.dead_letters() == []
    wait_for(lambda: sum(env.committed().values()) == 2, message="both committed")


def test_an_actor_can_declare_its_own_transient_errors_and_throws_still_wins(env):
    upstream_calls, thrown_calls = [], []

    @actor(broker=env.broker, topic=env.topic, max_retries=0, transient=UpstreamDown)
    def call_upstream():
        upstream_calls.append(1)
        if len(upstream_calls) < 4:
            raise UpstreamDown("503 from the billing service")

    @actor(broker=env.broker, topic=env.topic, max_retries=3, throws=(ConnectionError,))
    def refuses():
        thrown_calls.append(1)
        raise ConnectionResetError("the actor says: this one is the message's fault")

    env.start_worker(dependency_min_backoff_ms=10, dependency_max_backoff_ms=40)
    call_upstream.send()
    refuses.send()
    wait_for(lambda: len(upstream_calls) == 4, message=str(upstream_calls))
    (letter,) = wait_for(lambda: env.dead_letters())
    assert letter["actor"] == "refuses" and letter["reason"] == "failed" and len(thrown_calls) == 1


def _sqlalchemy_error(orig: Exception, cls=sqlalchemy.exc.OperationalError) -> Exception:
    return cls("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    "exception, expected",
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (redis.ConnectionError(), True),
        (redis.TimeoutError(), True),
        (_sqlalchemy_error(Exception("server closed the connection unexpectedly")), True),
        (_sqlalchemy_error(Exception("x"), sqlalchemy.exc.InterfaceError), True),
        (sqlalchemy.exc.TimeoutError("QueuePool limit reached"), True),
        (_sqlalchemy_error(Exception("invalid byte sequence"), sqlalchemy.exc.DataError), False),
        (_sqlalchemy_error(Exception("duplicate key"), sqlalchemy.exc.IntegrityError), False),
        (ValueError(), False),
        (KeyError("device_id"), False),
        (redis.ResponseError("WRONGTYPE"), False),
    ],
    ids=repr,
)
def test_the_default_classification(exception, expected):
    assert transient.is_transient(exception) is expected


def test_an_invalidated_connection_is_transient_whatever_the_error_class():
    error = _sqlalchemy_error(Exception("terminating connection"), sqlalchemy.exc.ProgrammingError)
    error.connection_invalidated = True
    assert transient.is_transient(error)


def test_the_backoff_doubles_is_capped_and_jittered():
    rng = random.Random(7)
    waits = [[transient.backoff_ms(n, 500, 30_000, rng) for _ in range(200)] for n in range(1, 12)]
    for n, samples in enumerate(waits, start=1):
        ceiling = min(30_000, 500 * 2 ** (n - 1))
        assert ceiling // 2 <= min(samples) and max(samples) <= ceiling
        assert len(set(samples)) > 1  # jittered
    assert max(waits[-1]) <= 30_000


def test_the_worker_reports_waiting_on_a_dependency_and_running_again_when_it_is_back(env):
    database_up = threading.Event()

    @actor(broker=env.broker, topic=env.topic)
    def store():
        if not database_up.is_set():
            raise ConnectionRefusedError("database is down")

    worker = env.start_worker(dependency_min_backoff_ms=10, dependency_max_backoff_ms=20)
    store.send()
    waiting = wait_for(lambda: (s := worker.status())["state"] == "waiting_on_dependency" and s)
    assert waiting["waiting_on_dependency"] == 1 and waiting["retrying"] == 0
    database_up.set()
    wait_for(lambda: worker.status()["state"] == "running" and sum(env.committed().values()) == 1)
    assert env.dead_letters() == []
