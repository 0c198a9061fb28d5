"""`make bench`: every figure of the performance issue, measured in one run, side by side with its peer.

    python -m bench.run [--quick] [--only http,tasks,storage,ingest,peer,mixed,tracing]

Prints one table (figure, ours, peer, ratio, goal) and saves everything as JSON under
bench/results/. Needs the local stack (`make bench` starts it), wrk (Debian), vegeta (built
from its Go module into .stack/bin) and the peers' venv (.stack/bench-venv, requirements-bench.txt).

What each clock includes is said where it is measured. HTTP: wrk with 1 thread at 8, 32 and 128
connections (best of the three), vegeta at a constant half of that best rate for p50/p99; the
CPU figure is the gunicorn workers' user+system time per request. Tasks: 20,000 no-op tasks that
each INCR a Redis counter, enqueued first, then drained by 2 processes x 8 threads; the clock
runs from starting the worker command to the counter reaching 20,000 (start-up included), and
from 2,000 to 20,000 (steady state).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, http, start_group_at_end, wait_for  # noqa: E402

BIN = ROOT / ".stack" / "bin"
PEERS_PY = ROOT / ".stack" / "bench-venv" / "bin" / "python"
PY = sys.executable
RESULTS = ROOT / "bench" / "results"
SECRET = "local-dev-secret"
# the local stack's development settings, as `make bench` exports them
for _name, _value in (("APP_ENV", "development"), ("POSTGRES_PASSWORD", "apppass"), ("JWT_SECRET", SECRET)):
    os.environ.setdefault(_name, _value)


@dataclasses.dataclass
class Row:
    figure: str
    ours: float | None
    peer: float | None = None
    peer_name: str = ""
    unit: str = ""
    goal: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.peer:
            return None
        return self.ours / self.peer


ROWS: list[Row] = []
DETAILS: dict[str, object] = {}


def say(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes


def _answers(url: str) -> bool:
    try:
        return http("GET", url)[0] < 500
    except OSError:
        return False


@contextmanager
def gunicorn(
    app: str, env: dict[str, str], probe: str = "/healthz", prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The project's gunicorn settings (gunicorn.conf.py, gevent, 2 workers) serving ``app``;
    ``prefix`` goes before the command (``nice``)."""
    port = free_port()
    environ = {**os.environ, "APP_ENV": "development", "JWT_SECRET": SECRET, "WEB_CONCURRENCY": "2",
               "BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "WARNING", **env}  # fmt: skip
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    metrics = tempfile.mkdtemp(prefix="bench-metrics-")
    if app == "wsgi:app":
        environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    log = open(Path(tempfile.gettempdir()) / f"bench-gunicorn-{port}.log", "wb")  # noqa: SIM115
    command = [*prefix, str(Path(PY).parent / "gunicorn"), "-c", "gunicorn.conf.py", app]
    proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + probe), timeout=30, message=f"{app} answering")
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def cpu_seconds_of_children(pid: int) -> float:
    """user+system CPU of ``pid``'s child processes (the gunicorn workers), in seconds."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# ------------------------------------------------------------------ HTTP load


def wrk_output(url: str, connections: int, seconds: int, headers: dict[str, str], body: dict | None = None) -> str:
    """wrk's report for one run (1 thread, latency percentiles; a POST of ``body`` when given)."""
    script = None
    args = [str(shutil_which("wrk")), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
        script.close()
        args += ["-s", script.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if script is not None:
        os.unlink(script.name)
    return out


def wrk(url: str, connections: int, seconds: int, headers: dict[str, str], body: dict | None = None) -> float:
    """2xx answers per second (others, such as a 503 from load shedding, are counted out and noted)."""
    out = wrk_output(url, connections, seconds, headers, body)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad and int(bad.group(1)) > 0:  # shed (503) when the loop lags: counted out, not fatal
        say(f"{url} at {connections} connections: {bad.group(1)} answers not 2xx (not counted)")
        noted = {"url": url, "connections": connections, "count": int(bad.group(1))}
        DETAILS.setdefault("wrk_not_2xx", []).append(noted)
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    took = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    return (int(done.group(1)) - (int(bad.group(1)) if bad else 0)) / took


def vegeta(url: str, rate: int, seconds: int, headers: dict[str, str], body: dict | None = None) -> dict:
    """Latency at a constant ``rate``: p50/p99 in ms, and the share of 2xx answers."""
    target = [f"{'POST' if body is not None else 'GET'} {url}", *(f"{k}: {v}" for k, v in headers.items())]
    with tempfile.TemporaryDirectory() as tmp:
        if body is not None:
            (Path(tmp) / "body.json").write_text(json.dumps(body))
            target += ["Content-Type: application/json", f"@{Path(tmp) / 'body.json'}"]
        command = [str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s", "-timeout=10s"]
        attack = subprocess.run(command, input=("\n".join(target) + "\n").encode(), capture_output=True, check=True)
        report = subprocess.run([str(BIN / "vegeta"), "report", "-type=json"], input=attack.stdout,
                                capture_output=True, check=True)  # fmt: skip
    data = json.loads(report.stdout)
    return {"rate": rate, "p50_ms": data["latencies"]["50th"] / 1e6, "p99_ms": data["latencies"]["99th"] / 1e6,
            "success": data["success"], "throughput": data["throughput"]}  # fmt: skip


def event_targets(directory: Path, url: str, auth: dict, prefix: str, devices: int = 1000) -> str:
    """vegeta targets POSTing to /events for ``devices`` devices in turn (vegeta cycles through
    them): real traffic comes from many devices, and one device's events run strictly in order."""
    lines = []
    for i in range(devices):
        body = directory / f"body-{i}.json"
        body.write_text(json.dumps({"device_id": f"{prefix}-{i}", "payload": {"status": "online", "temp_c": 37.2}}))
        lines.append(f"POST {url}/events\nAuthorization: {auth['Authorization']}\n"
                     f"Content-Type: application/json\n@{body}\n")  # fmt: skip
    return "\n".join(lines)


def shutil_which(name: str) -> str:
    import shutil

    found = shutil.which(name)
    if not found:
        raise SystemExit(f"bench: {name} not found (make bench installs it)")
    return found


def http_figure(
    name: str, url: str, proc: subprocess.Popen, seconds: int, headers: dict, body: dict | None = None
) -> dict:
    """Best wrk rate over 8/32/128 connections, CPU per request, and latency at half that rate."""
    rates = {}
    cpu_before = cpu_seconds_of_children(proc.pid)
    requests = 0.0
    for connections in (8, 32, 128):
        rates[connections] = wrk(url, connections, seconds, headers, body)
        requests += rates[connections] * seconds
    cpu_ms = (cpu_seconds_of_children(proc.pid) - cpu_before) * 1000 / requests
    best = max(rates.values())
    latency = vegeta(url, max(1, int(best / 2)), seconds, headers, body)
    result = {"rates": rates, "best": best, "cpu_ms_per_request": cpu_ms, "half_rate": latency}
    DETAILS[name] = result
    say(
        f"{name}: best {best:.0f} req/s, {cpu_ms:.2f} CPU ms/request, "
        f"p99 {latency['p99_ms']:.1f} ms at {latency['rate']}/s"
    )
    return result


def token(**claims: object) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": "bench", "roles": ["device", "user"], "iat": now, "exp": now + 3600, **claims},
                      SECRET, algorithm="HS256")  # fmt: skip


# ------------------------------------------------------------------ sections


def bench_http(seconds: int) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    with gunicorn("bench.bare_apps:plain", {}, probe="/ping") as (url, proc):
        bare = http_figure("bare_flask", url + "/ping", proc, seconds, {})
    with gunicorn("bench.bare_apps:with_jwt", {}, probe="/ping") as (url, proc):
        bare_jwt = http_figure("bare_flask_jwt", url + "/ping", proc, seconds, auth)
    device = f"bench-{uuid.uuid4().hex[:8]}"
    # as deployed: INFO, one JSON log line per request (to a file); limits out of the way
    api_env = {"CACHE_TTL_SECONDS": "3600", "RATE_LIMIT_EVENTS": "10000000/second", "LOG_LEVEL": "INFO"}
    with gunicorn("wsgi:app", api_env) as (url, proc):
        body = {"device_id": device, "payload": {"status": "online"}}
        assert http("POST", f"{url}/events", auth["Authorization"].removeprefix("Bearer "), body)[0] == 202
        _store_resource(device)  # no worker runs here: the row the GETs read is stored directly
        hit = http_figure("get_hit", f"{url}/resource/{device}", proc, seconds, auth)
        post = http_figure("post_worker_stopped", f"{url}/events", proc, seconds, auth,
                           {"device_id": device, "payload": {"status": "online", "temp_c": 37.2}})  # fmt: skip
    _forget_resource(device)
    base = bare["best"]
    ROWS.append(Row("bare Flask + PyJWT, req/s", bare_jwt["best"], base, "bare Flask", "req/s"))
    ROWS.append(Row("GET /resource/<id>, cache hit, req/s", hit["best"], base, "bare Flask", "req/s",
                    "P3 >= 0.6x bare Flask", hit["best"] / base >= 0.6))  # fmt: skip
    ROWS.append(Row("POST /events, worker stopped, req/s", post["best"], base, "bare Flask", "req/s",
                    "P2 >= 0.4x bare Flask", post["best"] / base >= 0.4))  # fmt: skip
    bare_cpu = bare["cpu_ms_per_request"]
    ROWS.append(Row("CPU ms per GET hit (gunicorn)", hit["cpu_ms_per_request"], bare_cpu, "bare Flask", "ms"))
    ROWS.append(Row("CPU ms per POST (gunicorn)", post["cpu_ms_per_request"], bare_cpu, "bare Flask", "ms"))
    DETAILS["post_max_rate"] = post["best"]


def _engine():
    from core.settings import load_settings
    from core.wiring import build_clients

    return build_clients(load_settings(require_jwt=False)).engine


def _store_resource(device: str) -> None:
    from core.resources import apply_event

    event = {"device_id": device, "payload": {"status": "online", "temp_c": 37.2},
             "received_at": dt.datetime.now(dt.UTC).isoformat(), "request_id": str(uuid.uuid4())}  # fmt: skip
    apply_event(_engine(), event)


def _forget_resource(*devices: str) -> None:
    from sqlalchemy import text

    with _engine().begin() as conn:
        conn.execute(text("DELETE FROM events WHERE device_id = ANY(:d)"), {"d": list(devices)})
        conn.execute(text("DELETE FROM resources WHERE id = ANY(:d)"), {"d": list(devices)})


# tasks ---------------------------------------------------------------


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


# storage -------------------------------------------------------------


def start_worker(args: list[str]) -> subprocess.Popen:
    """worker.py (tasks, 2 processes x 8 threads) as deployed: INFO, its JSON lines to a file."""
    env = {**os.environ, "LOG_LEVEL": "INFO"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(Path(tempfile.gettempdir()) / f"bench-worker-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([PY, "worker.py", "run", *args, "--processes", "2", "--threads", "8"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def _events(run: str, devices: int, rounds: int) -> list[dict]:
    start = dt.datetime.now(dt.UTC)
    return [{"request_id": str(uuid.uuid4()), "device_id": f"bench-{run}-{d}", "user_id": "bench",
             "received_at": (start + dt.timedelta(milliseconds=r)).isoformat(), "payload": {"round": r, "temp_c": 20.5}}
            for r in range(rounds) for d in range(devices)]  # fmt: skip


def bench_storage(devices: int, rounds: int) -> None:
    """The raw ceiling: one process writes the rows process_event writes (the audit row and the
    newest-wins upsert) with batched INSERT ... ON CONFLICT, 500 rows a statement, one transaction
    per 500 events. Then the same events through Kafka and worker.py (2 processes x 8 threads),
    clock from starting the worker to the group's committed offsets reaching the end."""
    from kafka import KafkaAdminClient

    from broker.brokers.kafka.admin import consumer_lag
    from core.resources import apply_events
    from core.settings import load_settings
    from core.wiring import make_broker
    from tasks.events import process_event

    settings = load_settings(require_jwt=False)
    engine = _engine()
    run = uuid.uuid4().hex[:8]
    events = _events(run, devices, rounds)
    started = time.perf_counter()
    for i in range(0, len(events), 500):  # each chunk lies within one round: distinct devices
        apply_events(engine, events[i : i + 500])
    ceiling = len(events) / (time.perf_counter() - started)
    _forget_resource(*{e["device_id"] for e in events})
    say(f"raw ceiling: {ceiling:.0f} events/s")

    run = uuid.uuid4().hex[:8]
    events = _events(run, devices, rounds)
    topic, group = f"bench-events-{run}", f"bench-events-{run}"
    broker = make_broker(settings)
    admin = KafkaAdminClient(**broker.client_options)
    admin.create_topics({topic: {"num_partitions": 6, "replication_factor": 1}})
    admin.wait_for_topics([topic])
    try:
        broker.enqueue_many(dataclasses.replace(process_event.message(e), topic=topic) for e in events)
        started = time.perf_counter()
        proc = start_worker(["--topics", topic, "--group", group])
        try:
            # The finish line is probed every 20 ms beside the worker, so it must be cheap: the
            # run's 2,000 resources by primary key, not a count over the growing events table.
            tenth = stored_at_tenth = None
            while True:
                started_devices, finished_devices = _devices_progress(engine, run, rounds - 1)
                if tenth is None and started_devices == devices:
                    tenth, stored_at_tenth = time.perf_counter(), _stored(engine, run)
                if finished_devices == devices and _stored(engine, run) == len(events):
                    break
                if proc.poll() is not None or time.perf_counter() - started > 600:
                    raise SystemExit("bench: the worker did not drain the events")
                time.sleep(0.02)
            finished = time.perf_counter()
            drained = len(events) / (finished - started)
            steady = (len(events) - stored_at_tenth) / (finished - tenth)
            wait_for(lambda: consumer_lag(broker.client_options, group, [topic])["total_lag"] == 0, timeout=60,
                     message="every offset committed")  # fmt: skip
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    finally:
        admin.delete_topics([topic])
        admin.close()
        broker.close()
        _forget_resource(*{e["device_id"] for e in events})
    say(f"process_event drain: {drained:.0f} events/s, steady {steady:.0f}/s")
    DETAILS["storage"] = {"events": len(events), "devices": devices, "raw_ceiling": ceiling, "drain": drained,
                          "steady": steady}  # fmt: skip
    ROWS.append(Row("process_event drain, start-up included, events/s", drained, ceiling, "raw batched upsert",
                    "events/s"))  # fmt: skip
    ROWS.append(Row("process_event drain, steady state, events/s", steady, ceiling, "raw batched upsert",
                    "events/s", "P4 >= 0.5x", steady / ceiling >= 0.5))  # fmt: skip


def _devices_progress(engine, run: str, last_round: int) -> tuple[int, int]:
    """How many of the run's devices have a stored event, and how many are at ``last_round``
    (per-device order: a device at its last round has every event of the run stored)."""
    from sqlalchemy import text

    query = text("SELECT count(*), count(*) FILTER (WHERE (payload->>'round')::int = :last) "
                 "FROM resources WHERE id LIKE :p")  # fmt: skip
    with engine.connect() as conn:
        started, finished = conn.execute(query, {"p": f"bench-{run}-%", "last": last_round}).one()
    return started, finished


def _stored(engine, run: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        query = text("SELECT count(*) FROM events WHERE device_id LIKE :p")
        return conn.execute(query, {"p": f"bench-{run}-%"}).scalar()


# ingest: end to end, freshness ------------------------------------------


def bench_ingest(seconds: int, rate: int) -> None:
    """API + worker + PostgreSQL + Kafka on this machine: POST at ``rate``/s for ``seconds`` with
    the worker running (its own group, from the topic's end), sampling the group's lag; then
    freshness (202 -> GET shows the new payload) at half the measured max POST rate."""
    from broker.brokers.kafka.admin import consumer_lag
    from core.settings import load_settings

    settings = load_settings(require_jwt=False)
    group = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    start_group_at_end(settings.kafka_options, group, "events-input")
    auth = {"Authorization": f"Bearer {token()}"}
    worker = start_worker(["--group", group])
    device = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    try:
        with gunicorn("wsgi:app", {"RATE_LIMIT_EVENTS": "10000000/second", "LOG_LEVEL": "INFO"}) as (url, _):
            from broker.brokers.kafka import client_options

            options = client_options(**settings.kafka_options)
            lags: list[int] = []
            with tempfile.TemporaryDirectory() as tmp:
                targets = event_targets(Path(tmp), url, auth, device)
                results = Path(tmp) / "results.bin"  # a file: a pipe left unread would stall vegeta
                attack = subprocess.Popen([str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s",
                                           "-timeout=10s", f"-output={results}"], stdin=subprocess.PIPE)  # fmt: skip
                attack.stdin.write(targets.encode())
                attack.stdin.close()
                while attack.poll() is None:
                    time.sleep(5)
                    lags.append(consumer_lag(options, group, ["events-input"])["total_lag"])
                raw = results.read_bytes()
            report = json.loads(subprocess.run([str(BIN / "vegeta"), "report", "-type=json"], input=raw,
                                               capture_output=True, check=True).stdout)  # fmt: skip
            lags.append(consumer_lag(options, group, ["events-input"])["total_lag"])
            accepted = report["throughput"]  # vegeta's throughput already counts successes only
            bounded = max(lags[len(lags) // 2 :]) <= max(rate, 1000) * 2  # under 2 s of backlog, not growing
            DETAILS["end_to_end"] = {"rate": rate, "seconds": seconds, "accepted_per_s": accepted,
                                     "success": report["success"], "status_codes": report["status_codes"],
                                     "lag_samples": lags,
                                     "p99_ms": report["latencies"]["99th"] / 1e6}  # fmt: skip
            say(f"end to end: {accepted:.0f} accepted/s of {rate}/s ({report['status_codes']}), lag samples {lags}")
            ROWS.append(Row(f"end to end at {rate}/s for {seconds} s, accepted/s", accepted, None, "", "events/s",
                            "P2 >= 1,000/s", accepted >= 0.99 * rate))  # fmt: skip
            ROWS.append(Row("  consumer lag, last sample (samples every 5 s)", lags[-1], None, "", "records",
                            "P2 bounded", bounded))  # fmt: skip
            half = int(DETAILS.get("post_max_rate", 400) / 2)
            fresh = freshness(url, auth, half, seconds=max(10, seconds // 3))
            ROWS.append(Row(f"freshness p99 at {half} POST/s, ms", fresh["p99_ms"], None, "", "ms", "P5 <= 50 ms",
                            fresh["p99_ms"] <= 50))  # fmt: skip
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
        _forget_resource(*(f"{device}-{i}" for i in range(1000)))


def freshness(url: str, auth: dict, rate: int, seconds: int) -> dict:
    """Background POSTs at ``rate``/s; meanwhile probes: POST a new payload, then GET until it shows."""
    import http.client

    probe = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    host, port = url.removeprefix("http://").split(":")
    samples: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        load = subprocess.Popen([str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
        load.stdin.write(event_targets(Path(tmp), url, auth, f"{probe}-load").encode())
        load.stdin.close()
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {**auth, "Content-Type": "application/json"}
        while load.poll() is None:
            marker = uuid.uuid4().hex
            conn.request("POST", "/events", json.dumps({"device_id": probe, "payload": {"m": marker}}), headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 202
            accepted = time.perf_counter()
            while True:
                conn.request("GET", f"/resource/{probe}", headers=auth)
                response = conn.getresponse()
                data = response.read()
                if response.status == 200 and json.loads(data)["payload"].get("m") == marker:
                    break
                if time.perf_counter() - accepted > 10:
                    raise SystemExit("bench: an event did not show within 10 s")
                time.sleep(0.002)
            samples.append(time.perf_counter() - accepted)
            time.sleep(0.05)
    samples.sort()
    result = {"rate": rate, "probes": len(samples), "p50_ms": samples[len(samples) // 2] * 1000,
              "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000}  # fmt: skip
    DETAILS["freshness"] = result
    _forget_resource(probe, *(f"{probe}-load-{i}" for i in range(1000)))
    say(f"freshness: {result}")
    return result


# ------------------------------------------------------------------ tracing


def bench_tracing(rounds: int, block: int) -> None:
    """What OpenTelemetry costs, off against on (all sampled), in one run: ``bench/tracing_cost.py``
    in a process of its own (it installs tracer providers), CPU per request and per message."""
    out = subprocess.run([PY, "-m", "bench.tracing_cost", "--rounds", str(rounds), "--block", str(block)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    DETAILS["tracing"] = report
    for phase, label in (("post", "CPU per POST /events"), ("message", "CPU per worker message")):
        figures = report["figures"][phase]
        on, off = statistics.median(figures["on_us"]), statistics.median(figures["off_us"])
        ROWS.append(Row(f"{label} with tracing on (100 % sampled), us", on, off, "tracing off", "us"))
        say(f"tracing: {label}: off {off:.0f} us, on {on:.0f} us ({on / off:.2f}x)")


# ------------------------------------------------------------------ report


def table() -> str:
    lines = ["| figure | ours | peer | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for row in ROWS:
        ours = "" if row.ours is None else f"{row.ours:,.2f}" if row.ours < 10 else f"{row.ours:,.0f}"
        peer = "" if row.peer is None else (f"{row.peer:,.2f}" if row.peer < 10 else f"{row.peer:,.0f}")
        peer = f"{peer} ({row.peer_name})" if row.peer_name and peer else peer
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.figure} | {ours} | {peer} | {ratio} | {row.goal} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test, not for figures)")
    parser.add_argument("--only", default="http,tasks,storage,ingest,peer,mixed,tracing")
    parser.add_argument("--rounds", type=int, default=2, help="peer: interleaved rounds of ours and the peer")
    parser.add_argument("--mixed-seconds", type=int, default=15, help="mixed: seconds per rate")
    parser.add_argument("--mixed-rates", default="0,100,250,500,2x", help="mixed: POST/s beside 800 GET/s")
    parser.add_argument(
        "--mixed-modes",
        default="api_alone,whole_system,api_split,whole_system_split",
        help="mixed: api_alone, whole_system, and each with _split (writes in their own pool)",
    )
    args = parser.parse_args()
    sections = set(args.only.split(","))
    seconds = 2 if args.quick else 5
    sys.modules.setdefault("bench.run", sys.modules[__name__])  # bench.mixed shares ROWS and DETAILS
    from bench import mixed

    if "http" in sections:
        bench_http(seconds)
    if "tasks" in sections:
        bench_tasks(4000 if args.quick else 20000)
    if "storage" in sections:
        bench_storage(500 if args.quick else 2000, 4 if args.quick else 10)
    if "ingest" in sections:
        bench_ingest(10 if args.quick else 60, 1000)
    if "peer" in sections:
        mixed.bench_peer(seconds, 1 if args.quick else args.rounds)
    if "mixed" in sections:
        mixed.bench_mixed(5 if args.quick else args.mixed_seconds, args.mixed_rates, args.mixed_modes)
    if "tracing" in sections:
        bench_tracing(2 if args.quick else 10, 100 if args.quick else 500)
    machine = (
        f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps({"date": stamp, "machine": machine, "quick": args.quick,
                                "rows": [dataclasses.asdict(r) | {"ratio": r.ratio} for r in ROWS],
                                "details": DETAILS, "tables": mixed.TABLES}, indent=2, default=str))  # fmt: skip
    print(f"\n{stamp}, {machine}{' (quick)' if args.quick else ''}\n")
    print(table())
    for extra in mixed.TABLES:
        print(f"\n{extra}")
    print(f"\nsaved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
