"""Telemetry (issue 13, the console's data): counts, worker states and lag sampled into Redis."""

from __future__ import annotations

import json
import os
import time

import pytest
import redis

from broker import StubBroker, Worker, actor
from broker.telemetry import Telemetry, TelemetryReader
from tests.helpers import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture
def prefix(redis_client, unique):
    name = f"telemetry-test-{unique}"
    yield name
    keys = list(redis_client.scan_iter(f"{name}:*"))
    if keys:
        redis_client.delete(*keys)


def test_counts_and_worker_states_reach_redis_and_read_back(redis_client, prefix):
    broker = StubBroker()
    telemetry = Telemetry(redis_client, prefix=prefix, interval_s=0.1)
    broker.add_middleware(telemetry)
    reader = TelemetryReader(redis_client, prefix=prefix)

    @actor(broker=broker, topic="t", max_retries=1, min_backoff=10)
    def job(ok):
        if not ok:
            raise ValueError("bad")

    worker = Worker(broker, worker_threads=2, commit_interval_ms=20)
    worker.start()
    try:
        for ok in (True, True, True, False):
            job.send(ok)
        broker.join("t", timeout=10_000, fail_fast=False)
        wait_for(lambda: reader.workers(), timeout=5)
        [me] = reader.workers()
        assert me["pid"] == os.getpid() and me["state"] == "running" and me["group"] == "workers"

        def totals():
            _, series = reader.counts()
            return {kind: sum(values) for kind, values in series.get("job", {}).items()}

        wait_for(lambda: totals() == {"processed": 3, "failed": 2, "retried": 1, "dead_letters": 1}, timeout=5,
                 message=str(totals()))  # fmt: skip
    finally:
        worker.stop()
    assert reader.workers() == []  # a stopped worker takes itself off


def test_one_process_at_a_time_samples_the_lag(redis_client, prefix):
    calls = {"a": 0, "b": 0}

    def sampler(name):
        def sample():
            calls[name] += 1
            return {"total_lag": 7, "partitions": [], "oldest_age_s": 1.5}

        return sample

    first = Telemetry(redis_client, prefix=prefix, lag=sampler("a"))
    second = Telemetry(redis_client, prefix=prefix, lag=sampler("b"))
    for _ in range(3):
        first.flush()
        second.flush()
    assert calls == {"a": 3, "b": 0}
    reader = TelemetryReader(redis_client, prefix=prefix)
    assert reader.latest_lag()["total_lag"] == 7
    _, reports = reader.lag()
    assert reports[-1]["oldest_age_s"] == 1.5


def test_a_redis_outage_loses_no_counts_and_stops_nothing():
    telemetry = Telemetry(redis.Redis(port=1, socket_connect_timeout=0.2), prefix="x")
    telemetry._count("job", "processed")
    telemetry.flush()  # logs, does not raise
    assert telemetry._counts[("job", "processed")] == 1


def test_the_lag_sample_counts_the_live_worker_processes_beside_it(redis_client, prefix):
    broker = StubBroker()
    telemetry = Telemetry(redis_client, prefix=prefix, interval_s=0.1, lag=lambda: {"total_lag": 3, "partitions": []})
    broker.add_middleware(telemetry)

    @actor(broker=broker, topic="t")
    def job():
        pass

    worker = Worker(broker, worker_threads=1)
    worker.start()
    reader = TelemetryReader(redis_client, prefix=prefix)
    try:
        wait_for(lambda: (reader.latest_lag() or {}).get("workers") == 1, timeout=5, message="one process sampled")
        # another process reports (a fresh status): the next samples count both
        redis_client.hset(f"{prefix}:workers", "other:1", json.dumps({"updated": time.time() + 60}))
        wait_for(lambda: reader.latest_lag()["workers"] == 2, timeout=5, message="two processes sampled")
    finally:
        worker.stop()


def test_a_bucket_keeps_its_peak_lag_and_the_most_worker_processes_seen(redis_client, prefix):
    from broker.telemetry import store_lag_sample

    now = time.time()
    store_lag_sample(redis_client, prefix, {"total_lag": 10, "workers": 1, "at": now})
    store_lag_sample(redis_client, prefix, {"total_lag": 5, "workers": 3, "at": now})
    store_lag_sample(redis_client, prefix, {"total_lag": 20, "at": now})  # the console's reading: no count
    _, reports = TelemetryReader(redis_client, prefix=prefix).lag(now)
    assert (reports[-1]["total_lag"], reports[-1]["workers"]) == (20, 3)
