"""Single-flight loads (issue 10, P3): callers that miss the same key together share one load."""

from __future__ import annotations

import threading

import pytest

from core.singleflight import SingleFlight
from tests.helpers import wait_for


def _ask_concurrently(flight: SingleFlight, key: str, callers: int, load) -> list:
    results: list = []
    errors: list = []

    def ask() -> None:
        try:
            results.append(flight.do(key, load))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(callers)]
    for thread in threads:
        thread.start()
    return [threads, results, errors]


def test_concurrent_callers_share_one_load():
    flight: SingleFlight[int] = SingleFlight()
    release, loads = threading.Event(), []

    def load() -> int:
        loads.append(1)
        release.wait(10)
        return 42

    threads, results, _ = _ask_concurrently(flight, "device-1", 16, load)
    wait_for(lambda: flight.waiters("device-1") == 15, timeout=10, message="15 callers wait for the first")
    release.set()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert sorted(results) == [(42, False)] * 15 + [(42, True)]
    assert flight.in_flight() == 0


def test_a_failed_load_fails_its_waiters_and_the_next_caller_loads_again():
    flight: SingleFlight[int] = SingleFlight()
    release = threading.Event()

    def failing() -> int:
        release.wait(10)
        raise ConnectionError("database down")

    threads, results, errors = _ask_concurrently(flight, "k", 4, failing)
    wait_for(lambda: flight.waiters("k") == 3, timeout=10)
    release.set()
    for thread in threads:
        thread.join()
    assert results == [] and len(errors) == 4 and all(isinstance(e, ConnectionError) for e in errors)
    assert flight.do("k", lambda: 7) == (7, True)


def test_a_waiter_that_waits_too_long_loads_for_itself():
    flight: SingleFlight[str] = SingleFlight(timeout=0.05)
    release = threading.Event()
    leader = threading.Thread(target=flight.do, args=("k", lambda: release.wait(10) and "slow"))
    leader.start()
    wait_for(lambda: flight.in_flight() == 1, timeout=10)
    assert flight.do("k", lambda: "own") == ("own", True)
    release.set()
    leader.join()


def test_different_keys_load_independently():
    flight: SingleFlight[str] = SingleFlight()
    assert flight.do("a", lambda: "A") == ("A", True)
    assert flight.do("b", lambda: "B") == ("B", True)
    with pytest.raises(KeyError):
        flight.do("c", lambda: {}["missing"])
