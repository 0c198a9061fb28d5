"""The benchmark's tasks section (``--only tasks``): our library's send, bulk enqueue and drain
against a bare kafka-python producer and against Dramatiq and Celery on Redis (the peers' venv).

20,000 no-op tasks that each INCR a Redis counter, enqueued first, then drained by 2 processes x 8
threads; the clock runs from starting the worker command to the counter reaching 20,000
(start-up included), and from 2,000 to 20,000 (steady state).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.common import DETAILS, PEERS_PY, PY, ROOT, ROWS, Row, say


def _counter(redis_url: str, key: str) -> Callable[[], int]:
    import redis

    client = redis.Redis.from_url(redis_url)
    return lambda: int(client.get(key) or 0)


def _drain(command: list[str], env: dict[str, str], count: Callable[[], int], n: int, python: str) -> dict:
    """Start the worker command; clock to n increments (and from n/10 to n); stop it."""
    log = open(Path(tempfile.gettempdir()) / f"bench-drain-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    started = time.perf_counter()
    proc = subprocess.Popen([python, *command], cwd=ROOT, env={**os.environ, **env}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    tenth = None
    try:
        deadline = time.monotonic() + 600
        while (value := count()) < n:
            if tenth is None and value >= n // 10:
                tenth = time.perf_counter()
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: {' '.join(command)} stopped at {value}/{n} (log {log.name})")
            time.sleep(0.01)
        finished = time.perf_counter()
        time.sleep(1.0)  # duplicates would still arrive: measured, not waited on
        final = count()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()
    tenth = tenth or started
    return {"with_startup": n / (finished - started), "steady": (n - n // 10) / (finished - tenth),
            "executions": final, "duplicates": final - n}  # fmt: skip


def bench_tasks(n: int) -> None:
    from kafka import KafkaAdminClient

    from broker import set_broker
    from core.settings import load_settings
    from core.wiring import make_broker

    settings = load_settings(require_jwt=False)
    run = uuid.uuid4().hex[:8]
    topic, counter = f"bench-incr-{run}", f"bench:incr:{run}"
    os.environ.update(BENCH_TOPIC=topic, BENCH_COUNTER=counter)
    broker = make_broker(settings)
    set_broker(broker)
    from bench import incr_actors

    admin = KafkaAdminClient(**broker.client_options)
    admin.create_topics({topic: {"num_partitions": 6, "replication_factor": 1}})
    admin.wait_for_topics([topic])
    try:
        blocking = 1000
        incr_actors.incr.send_with_options(args=(0,), key="k0")  # connects the producer: not timed
        started = time.perf_counter()
        for i in range(1, blocking):
            incr_actors.incr.send_with_options(args=(i,), key=f"k{i % 500}")
        send_rate = (blocking - 1) / (time.perf_counter() - started)
        bare_send_rate = bare_producer_send_rate(broker, admin, blocking - 1)
        started = time.perf_counter()
        incr_actors.incr.send_many(
            incr_actors.incr.message_with_options(args=(i,), key=f"k{i % 500}") for i in range(n - blocking)
        )
        bulk_rate = (n - blocking) / (time.perf_counter() - started)
        say(
            f"ours: blocking send {send_rate:.0f}/s (kafka-python alone {bare_send_rate:.0f}/s), "
            f"send_many {bulk_rate:.0f}/s"
        )
        env = {"LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "BENCH_TOPIC": topic, "BENCH_COUNTER": counter}
        command = ["worker.py", "run", "bench.incr_actors", "--topics", topic, "--group", f"bench-{run}",
                   "--processes", "2", "--threads", "8"]  # fmt: skip
        ours = _drain(command, env, _counter(settings.redis_url, counter), n, PY)
        say(f"ours: drain {ours}")
    finally:
        admin.delete_topics([topic])
        admin.close()
        broker.close()
    peers = bench_peers(n, run)
    DETAILS["tasks"] = {"ours": ours, "send_per_s": send_rate, "send_many_per_s": bulk_rate,
                        "kafka_python_send_per_s": bare_send_rate, **peers}  # fmt: skip
    d, c = peers["dramatiq"], peers["celery"]
    ROWS.append(Row("drain no-op INCR, start-up included, tasks/s", ours["with_startup"], d["with_startup"],
                    "Dramatiq+Redis", "tasks/s", "P1 >= 1.5x",
                    ours["with_startup"] / d["with_startup"] >= 1.5))  # fmt: skip
    ROWS.append(Row("drain no-op INCR, steady state, tasks/s", ours["steady"], d["steady"], "Dramatiq+Redis",
                    "tasks/s", "P1 >= 1.5x", ours["steady"] / d["steady"] >= 1.5))  # fmt: skip
    ROWS.append(Row("drain no-op INCR, start-up included, tasks/s", ours["with_startup"], c["with_startup"],
                    "Celery+Redis", "tasks/s", "P1 >= 5x", ours["with_startup"] / c["with_startup"] >= 5))  # fmt: skip
    ROWS.append(Row("drain no-op INCR, steady state, tasks/s", ours["steady"], c["steady"], "Celery+Redis",
                    "tasks/s", "P1 >= 5x", ours["steady"] / c["steady"] >= 5))  # fmt: skip
    ROWS.append(Row("blocking one-by-one send, msgs/s", send_rate, bare_send_rate, "kafka-python alone", "msgs/s",
                    "P1 >= 1,000/s", send_rate >= 1000))  # fmt: skip
    ROWS.append(Row("blocking one-by-one send, msgs/s", send_rate, d["send_per_s"], "Dramatiq send", "msgs/s"))
    ROWS.append(Row("bulk enqueue (send_many), msgs/s", bulk_rate, d["send_per_s"], "Dramatiq send loop", "msgs/s",
                    "P1 >= 2x", bulk_rate / d["send_per_s"] >= 2))  # fmt: skip
    ROWS.append(Row("duplicate executions on a clean start", ours["duplicates"], None, "", "tasks", "P1 = 0",
                    ours["duplicates"] == 0))  # fmt: skip


def bare_producer_send_rate(broker, admin, count: int) -> float:
    """kafka-python's own blocking send loop with our producer's settings (acks=all, linger 0,
    one request in flight, no idempotence), 200-byte values over 500 keys, on a scratch topic:
    what a blocking send costs before any of our code runs. The first send connects, untimed."""
    from kafka import KafkaProducer

    topic = f"bench-send-{uuid.uuid4().hex[:8]}"
    admin.create_topics({topic: {"num_partitions": 6, "replication_factor": 1}})
    admin.wait_for_topics([topic])
    producer = KafkaProducer(**broker.client_options, acks="all", linger_ms=0, enable_idempotence=False,
                             max_in_flight_requests_per_connection=1)  # fmt: skip
    try:
        producer.send(topic, b"x" * 200, key=b"k0").get(10)
        started = time.perf_counter()
        for i in range(count):
            producer.send(topic, b"x" * 200, key=f"k{i % 500}".encode()).get(10)
        return count / (time.perf_counter() - started)
    finally:
        producer.close()
        admin.delete_topics([topic])


def bench_peers(n: int, run: str) -> dict:
    if not PEERS_PY.exists():
        raise SystemExit("bench: the peers' venv is missing (make bench creates .stack/bench-venv)")
    from core.settings import load_settings

    base = load_settings(require_jwt=False).redis_url.rsplit("/", 1)[0]
    results = {}
    for name, db, enqueue, command in (
        ("dramatiq", 2, "from bench.peers.dramatiq_incr import incr\nfor i in range({n}): incr.send(i)",
         ["-m", "dramatiq", "-p", "2", "-t", "8", "bench.peers.dramatiq_incr"]),
        ("celery", 3, "from bench.peers.celery_incr import incr\nfor i in range({n}): incr.delay(i)",
         ["-m", "celery", "-A", "bench.peers.celery_incr", "worker", "-c", "2", "-P", "prefork", "--without-gossip",
          "--without-mingle", "--without-heartbeat", "-l", "WARNING"]),
    ):  # fmt: skip
        url, counter = f"{base}/{db}", f"bench:incr:{run}:{name}"
        env = {"BENCH_PEER_REDIS_URL": url, "BENCH_COUNTER": counter, "PYTHONPATH": str(ROOT)}
        import redis

        redis.Redis.from_url(url).flushdb()
        code = "import time\nt = time.perf_counter()\n" + enqueue.format(n=n) + "\nprint(time.perf_counter() - t)"
        took = float(subprocess.run([str(PEERS_PY), "-c", code], cwd=ROOT, env={**os.environ, **env},
                                    capture_output=True, text=True, check=True).stdout)  # fmt: skip
        result = _drain(command, env, _counter(url, counter), n, str(PEERS_PY))
        result["send_per_s"] = n / took
        results[name] = result
        say(f"{name}: send {result['send_per_s']:.0f}/s, drain {result}")
        redis.Redis.from_url(url).flushdb()
    return results
