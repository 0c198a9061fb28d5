"""The chaos harness: the real system under load, a ledger of every ``202``, and the checks.

The system is what production runs: the API under gunicorn with gevent workers and ``worker.py``
with several processes, on the local stack (``scripts/stack``). Devices post events at a steady
rate, each with its own sequence number in the payload, and every answer goes into a ledger.
Faults are injected from outside (SIGKILL, stopping a server). Afterwards the harness waits for
the drain and checks, in PostgreSQL and through ``GET /resource``, that every acknowledged event
was stored exactly once and that every device's resource (and its cache entry) shows its newest
acknowledged event. With ``Run(..., async_actor=True)`` an ``async def`` actor
(:mod:`tests.chaos.async_actors`) runs in the same worker and is held to the same ledger: every
message it was sent and Kafka acknowledged is stored exactly once (the actor never fails by itself, so
a dead letter of it is a problem).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import jwt
import jwt.warnings
import redis
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import TopicPartition as KTP
from sqlalchemy import Engine, text

from broker import set_broker
from broker.brokers.kafka import client_options
from broker.errors import BrokerError
from broker.message import Message
from broker.middleware import AsyncIO
from core.cache import cache_key
from core.db import make_engine
from core.settings import Settings
from core.wiring import make_broker
from tests.helpers import free_port, position, start_group_at_end

ROOT = Path(__file__).resolve().parents[2]
INPUT_TOPIC = "events-input"
# imported only by a run that wants it: importing declares its actor on whatever broker is set
ASYNC_MODULE = "tests.chaos.async_actors"
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)  # the development secret


def log(message: str) -> None:
    print(f"chaos {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.25) -> bool:
    """True as soon as ``condition()`` is truthy; False once ``timeout`` seconds passed without."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if condition():
                return True
        time.sleep(interval)
    return False


def stack(*args: str, env: dict[str, str] | None = None) -> None:
    """``scripts/stack ARGS`` (e.g. ``stop kafka``, ``up``)."""
    subprocess.run(
        [str(ROOT / "scripts" / "stack"), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren), read from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children[ppid].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# ---------------------------------------------------------------- the system under test


class System:
    """The API (gunicorn, 2 gevent workers) and ``worker.py -p N`` as separate real processes."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        *,
        worker_processes: int = 2,
        env: dict | None = None,
        static: bool = False,
        modules: tuple[str, ...] = ("tasks",),
    ):
        self.settings = settings
        self.modules = modules
        self.group = f"chaos-{run_id}"
        # static membership (KIP-345): each worker process restarts under the same identity
        self.instance_id = f"chaos-{run_id}" if static else None
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.worker_processes = worker_processes
        self.logs = Path(tempfile.mkdtemp(prefix=f"chaos-{run_id}-"))
        metrics = self.logs / "prometheus"
        metrics.mkdir()
        self.env = {
            **os.environ,
            "APP_ENV": "development",
            "JWT_SECRET": "local-dev-secret",
            "POSTGRES_PASSWORD": settings.postgres_password,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "KAFKA_CONSUMER_GROUP": self.group,
            "LOG_LEVEL": os.environ.get("CHAOS_LOG_LEVEL", "INFO"),
            "RATE_LIMIT_EVENTS": "100000/second",  # one subject posts for every device here
            **(env or {}),
        }
        self.api_env = {**self.env, "BIND": self.url, "WEB_CONCURRENCY": "2", "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.worker_env = {k: v for k, v in self.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self._starts = 0

    def start(self) -> None:
        start_group_at_end(self.settings.kafka_options, self.group, INPUT_TOPIC)
        if ASYNC_MODULE in self.modules:
            from tests.chaos import async_actors

            start_group_at_end(self.settings.kafka_options, self.group, async_actors.TOPIC)
        self.api = self._spawn(
            "api", [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], self.api_env
        )
        self.start_worker()
        if not wait_until(lambda: _get(self.url, "/healthz")[0] == 200, timeout=60):
            raise RuntimeError(f"the API did not answer /healthz; see {self.logs}")

    def start_worker(self) -> None:
        argv = [sys.executable, "worker.py", "run", *self.modules, "-p", str(self.worker_processes), "-t", "8"]
        if self.instance_id:
            argv += ["--instance-id", self.instance_id]
        self.worker = self._spawn("worker", argv, self.worker_env)

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        self._starts += 1
        out = open(self.logs / f"{name}-{self._starts}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def worker_pids(self) -> list[int]:
        return [self.worker.pid, *descendants(self.worker.pid)] if self.worker else []

    def kill_worker(self) -> int:
        """SIGKILL the worker supervisor and every child at once; returns how many died."""
        pids = self.worker_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.worker:
            self.worker.wait(timeout=10)
        return len(pids)

    def stop(self) -> None:
        for proc in (self.worker, self.api):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.worker, self.api):
            if proc:
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()


def token(roles: tuple[str, ...] = ("device", "user")) -> str:
    claims = {"sub": "chaos", "roles": list(roles), "exp": dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)}
    return jwt.encode(claims, "local-dev-secret", algorithm="HS256")


def _get(url: str, path: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# ---------------------------------------------------------------- load and the ledger


@dataclass(frozen=True)
class Post:
    device: str
    seq: int
    status: int  # 0: no answer (timeout, connection refused)
    request_id: str | None
    sent: float
    done: float


@dataclass
class Ledger:
    posts: list[Post] = field(default_factory=list)
    reads: list[tuple[float, int]] = field(default_factory=list)  # (time, status) of GETs
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, post: Post) -> None:
        with self.lock:
            self.posts.append(post)

    def acked(self) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.status == 202]

    def count(self, predicate: Callable[[Post], bool]) -> int:
        with self.lock:
            return sum(1 for p in self.posts if predicate(p))

    def first_ack_after(self, moment: float) -> float | None:
        with self.lock:
            times = [p.done for p in self.posts if p.status == 202 and p.sent >= moment]
        return min(times) if times else None


class Devices:
    """``count`` devices posting sequentially, ``rate`` events per second in all, until stopped."""

    def __init__(self, url: str, ledger: Ledger, run_id: str, *, count: int = 8, rate: float = 30, prefix: str = "dev"):
        self.url, self.ledger, self.rate = url, ledger, rate
        self.ids = [f"chaos-{run_id}-{prefix}{i}" for i in range(count)]
        self.writer = uuid.uuid4().hex[:8]  # several Devices may post for one id: seq is per writer
        self.headers = {"Authorization": f"Bearer {token()}", "Content-Type": "application/json"}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(d,), daemon=True) for d in self.ids]

    def start(self) -> Devices:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, device: str) -> None:
        interval = len(self.ids) / self.rate
        conn: http.client.HTTPConnection | None = None
        seq = 0
        next_at = time.monotonic() + random.random() * interval
        while not self._stop.is_set():
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at += interval
            seq += 1
            body = json.dumps({"device_id": device, "payload": {"seq": seq, "writer": self.writer}})
            sent = time.monotonic()
            status, request_id = 0, None
            try:
                conn = conn or http.client.HTTPConnection(self.url, timeout=10)
                conn.request("POST", "/events", body=body, headers=self.headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
                if status == 202:
                    request_id = json.loads(data)["request_id"]
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            self.ledger.add(Post(device, seq, status, request_id, sent, time.monotonic()))


class Loop:
    """A daemon thread that calls :meth:`tick` every ``interval`` seconds until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def tick(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()


class Readers(Loop):
    """``GET /resource/<id>`` for random devices, ``rate`` per second, every status recorded."""

    def __init__(self, url: str, ledger: Ledger, devices: list[str], rate: float = 20):
        super().__init__(1 / rate)
        self.url, self.ledger, self.devices = url, ledger, devices
        self.headers = {"Authorization": f"Bearer {token()}"}

    def tick(self) -> None:
        try:
            status, _ = _get(self.url, f"/resource/{random.choice(self.devices)}", self.headers, timeout=5)
        except (OSError, http.client.HTTPException):
            status = 0
        with self.ledger.lock:
            self.ledger.reads.append((time.monotonic(), status))


class AsyncSender(Loop):
    """Sends ``rate`` messages a second to the async actor through the library (``actor.send``,
    which returns once Kafka acknowledged), each with its own ledger id; remembers the acknowledged
    ones (the async ledger) and counts the sends that failed (not acknowledged: no promise made)."""

    def __init__(self, run_id: str, rate: float = 5) -> None:
        super().__init__(1 / rate)
        self.run_id = run_id
        self.acked: list[str] = []
        self.failed = 0
        self._seq = 0

    def tick(self) -> None:
        self._seq += 1
        ledger_id = f"{self.run_id}-a{self._seq}"
        from tests.chaos import async_actors

        try:
            async_actors.store_async.send(self.run_id, ledger_id)
        except BrokerError:
            self.failed += 1
        else:
            self.acked.append(ledger_id)


def ensure_async_actor(settings: Settings, engine: Engine) -> None:
    """The async actor's topic (if missing: replication factor 1 on the single-broker stack, 3 on
    the cluster) and its table."""
    from tests.chaos import async_actors

    admin = KafkaAdminClient(**client_options(**settings.kafka_options))
    try:
        if async_actors.TOPIC not in admin.list_topics():
            replicas = min(3, len(admin.describe_cluster()["brokers"]))
            spec = {"num_partitions": async_actors.TOPIC_PARTITIONS, "replication_factor": replicas}
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics({async_actors.TOPIC: spec})
        admin.wait_for_topics([async_actors.TOPIC], timeout_ms=30000)
    finally:
        admin.close()
    async_actors.create_table(engine)


# ---------------------------------------------------------------- what PostgreSQL holds


class Stored(Loop):
    """Polls PostgreSQL for the run's events and remembers when each request id first appeared."""

    def __init__(self, engine: Engine, device_prefix: str, interval: float = 0.25):
        super().__init__(interval)
        self.engine, self.prefix = engine, device_prefix
        self._first_seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT request_id FROM events WHERE device_id LIKE :p"), {"p": self.prefix + "%"}
            ).all()
        now = time.monotonic()
        with self._lock:
            for (request_id,) in rows:
                self._first_seen.setdefault(str(request_id), now)

    @property
    def first_seen(self) -> dict[str, float]:
        """``{request_id: when first seen stored}``, a copy."""
        with self._lock:
            return dict(self._first_seen)

    def tick(self) -> None:
        with contextlib.suppress(Exception):  # PostgreSQL may be the fault
            self.poll()


def dead_letter_ends(settings: Settings) -> dict[KTP, int]:
    consumer = KafkaConsumer(**client_options(**settings.kafka_options))
    try:
        tps = [KTP(settings.kafka_topic_dlq, p) for p in consumer.partitions_for_topic(settings.kafka_topic_dlq)]
        return consumer.end_offsets(tps)
    finally:
        consumer.close()


def dead_letters_since(settings: Settings, starts: dict[KTP, int]) -> list:
    """Every record written to the dead-letter topic after ``starts`` (its end offsets earlier)."""
    consumer = KafkaConsumer(**client_options(**settings.kafka_options), enable_auto_commit=False)
    try:
        consumer.assign(list(starts))
        ends = consumer.end_offsets(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        records: list = []
        deadline = time.monotonic() + 60
        while any(position(consumer, tp) < ends[tp] for tp in starts) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(r for r in batch if r.offset < ends[KTP(r.topic, r.partition)])
        return records
    finally:
        consumer.close()


# ---------------------------------------------------------------- the verdict


@dataclass
class Result:
    scenario: str
    acked: int = 0
    lost: int = 0
    dup: int = 0
    stale: int = 0
    dlq: int = 0
    fivexx: int = 0
    recovered_s: float | None = None
    problems: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)  # scenario-specific measurements

    @property
    def ok(self) -> bool:
        return not self.problems and not self.lost and not self.dup and not self.stale and self.recovered_s is not None

    def line(self) -> str:
        recovered = "never" if self.recovered_s is None else f"{self.recovered_s:.1f}"
        return (
            f"{self.scenario} acked={self.acked} lost={self.lost} dup={self.dup} stale={self.stale} "
            f"dlq={self.dlq} 5xx={self.fivexx} recovered_s={recovered}"
            + "".join(f" {name}={value}" for name, value in self.figures.items())
        )


class Run:
    """One scenario's world: the system, its devices, the ledger and the PostgreSQL monitor."""

    def __init__(
        self,
        settings: Settings,
        scenario: str,
        *,
        worker_processes: int = 2,
        env: dict | None = None,
        static: bool = False,
        async_actor: bool = False,
    ):
        self.settings = settings
        self.scenario = scenario
        self.run_id = f"{scenario}-{uuid.uuid4().hex[:6]}"
        modules = ("tasks", ASYNC_MODULE) if async_actor else ("tasks",)
        self.system = System(
            settings, self.run_id, worker_processes=worker_processes, env=env, static=static, modules=modules
        )
        self.ledger = Ledger()
        self.engine = make_engine(settings, pool_size=2, max_overflow=0)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.stored = Stored(self.engine, f"chaos-{self.run_id}-")
        self.dlq_start = dead_letter_ends(settings)
        self.result = Result(scenario)
        self.sender: AsyncSender | None = None
        self._sender_broker = None
        if async_actor:
            ensure_async_actor(settings, self.engine)
            # this process only sends: a broker with AsyncIO, which an async actor's declaration needs
            self._sender_broker = make_broker(settings, middleware=[AsyncIO()])
            set_broker(self._sender_broker)
            importlib.import_module(ASYNC_MODULE)  # declares the actor on it
            self.sender = AsyncSender(self.run_id)

    @contextlib.contextmanager
    def running(self) -> Iterator[Run]:
        processes = self.system.worker_processes
        log(f"{self.scenario}: starting the API and worker.py -p {processes} (logs {self.system.logs})")
        self.system.start()
        self.stored.start()
        if self.sender:
            self.sender.start()
        try:
            yield self
        finally:
            if self.sender:
                self.sender.stop()
            if self._sender_broker:
                self._sender_broker.close()
            self.stored.stop()
            self.system.stop()
            self.engine.dispose()

    def devices(self, **options) -> Devices:
        return Devices(self.system.url, self.ledger, self.run_id, **options)

    def finish(
        self, devices: Devices, *, fault_end: float, drain_timeout: float = 120, max_recovery_s: float = 60
    ) -> Result:
        """Stop the load, wait for the drain, and fill in the result."""
        devices.stop()
        if self.sender:
            self.sender.stop()
        result = self.result
        acked = self.ledger.acked()
        result.acked = len(acked)
        result.fivexx = self.ledger.count(lambda p: p.status >= 500)
        wanted = {p.request_id for p in acked}
        drained = wait_until(lambda: wanted <= self.stored.first_seen.keys(), timeout=drain_timeout, interval=0.5)
        with contextlib.suppress(Exception):
            self.stored.poll()
        result.lost = len(wanted - self.stored.first_seen.keys())
        if not drained:
            result.problems.append(f"not drained within {drain_timeout:.0f}s")
        self._check_rows(acked, devices.ids)
        letters = dead_letters_since(self.settings, self.dlq_start)
        result.dlq = len(letters)
        self._recovery(acked, fault_end, max_recovery_s)
        if self.sender:
            self._check_async(letters, drain_timeout)
        return result

    def _stored_async(self) -> dict[str, int]:
        """``{ledger_id: deliveries}`` of this run's rows in the async actor's table."""
        from tests.chaos import async_actors

        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT ledger_id, deliveries FROM {async_actors.TABLE} WHERE run_id = :r"), {"r": self.run_id}
            ).all()
        return {ledger_id: deliveries for ledger_id, deliveries in rows}

    def _check_async(self, letters: list, drain_timeout: float) -> None:
        """The async actor's ledger: every acknowledged send stored (its table's primary key makes
        a second store impossible; ``deliveries`` counts the redeliveries it absorbed). The actor
        never fails by itself, so a dead letter of it is a problem too. Figures: ``async_sent``
        (acknowledged), ``async_stored``, ``async_missing``, ``async_redelivered``, ``async_dlq``,
        ``async_send_failed``."""
        from tests.chaos import async_actors

        assert self.sender is not None
        wanted = set(self.sender.acked)

        def async_letters(records: list) -> dict[str, str]:
            dead: dict[str, str] = {}
            for record in records:
                with contextlib.suppress(Exception):  # another actor's letter, or an undecodable one
                    message = Message.decode(record.value)
                    if message.actor_name == async_actors.ACTOR_NAME and message.args[0] == self.run_id:
                        dead[message.args[1]] = dict(record.headers or []).get("dlq.reason", b"").decode()
            return dead

        dead = async_letters(letters)
        stored: dict[str, int] = {}

        def drained() -> bool:
            stored.clear()
            stored.update(self._stored_async())
            return wanted <= stored.keys() | dead.keys()

        if not wait_until(drained, timeout=drain_timeout, interval=0.5):
            dead = async_letters(dead_letters_since(self.settings, self.dlq_start))  # written meanwhile
            if not drained():
                self.result.problems.append(f"async actor not drained within {drain_timeout:.0f}s")
        missing = wanted - stored.keys() - dead.keys()
        figures = self.result.figures
        figures["async_sent"] = len(wanted)
        figures["async_stored"] = len(wanted & stored.keys())
        figures["async_missing"] = len(missing)
        figures["async_redelivered"] = sum(1 for i in wanted if stored.get(i, 0) > 1)
        figures["async_dlq"] = len(dead)
        figures["async_send_failed"] = self.sender.failed
        if missing:
            self.result.problems.append(f"{len(missing)} acknowledged async messages lost: {sorted(missing)[:5]}")
        if dead:  # the actor never fails by itself: a kill must lead to a redelivery, not a dead letter
            reasons = sorted(set(dead.values()))
            self.result.problems.append(f"{len(dead)} async messages dead-lettered (reasons {reasons})")

    def processing_latency(self) -> dict[str, float]:
        """Seconds from each acknowledged event's 202 until it was first seen stored: p50, p99, max."""
        seen = self.stored.first_seen
        waits = sorted(max(0.0, seen[p.request_id] - p.done) for p in self.ledger.acked() if p.request_id in seen)
        if not waits:
            return {}

        def at(q: float) -> float:
            return round(waits[min(len(waits) - 1, int(q * len(waits)))], 1)

        return {"latency_p50_s": at(0.50), "latency_p99_s": at(0.99), "latency_max_s": round(waits[-1], 1)}

    def first_stored_after(self, moments: list[float]) -> list[float]:
        """For each moment (a restart), seconds until the next event was first seen stored."""
        times = sorted(self.stored.first_seen.values())
        out = []
        for moment in moments:
            later = [t for t in times if t >= moment]
            out.append(round(later[0] - moment, 1) if later else float("inf"))
        return out

    def _check_rows(self, acked: list[Post], device_ids: list[str]) -> None:
        """dup: an acknowledged event stored more than once; stale: a resource (in PostgreSQL,
        through the API, or in the cache) behind its device's newest acknowledged event."""
        with self.engine.connect() as conn:
            dup = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT device_id, payload->>'writer', payload->>'seq' FROM events "
                    "WHERE device_id = ANY(:d) GROUP BY 1, 2, 3 HAVING count(*) > 1) twice"
                ),
                {"d": device_ids},
            ).scalar_one()
            rows = {
                r.id: r
                for r in conn.execute(
                    text("SELECT id, payload, version FROM resources WHERE id = ANY(:d)"), {"d": device_ids}
                )
            }
        self.result.dup = dup
        newest: dict[str, int] = defaultdict(int)
        for post in acked:
            newest[post.device] = max(newest[post.device], post.seq)
        headers = {"Authorization": f"Bearer {token()}"}
        stale = []
        for device, seq in newest.items():
            row = rows.get(device)
            status, body = _get(self.system.url, f"/resource/{device}", headers)
            served = json.loads(body) if status == 200 else {}
            cached = self.redis.get(cache_key(device))
            cached_doc = json.loads(cached) if cached else None
            if (
                row is None
                or row.payload["seq"] < seq
                or served.get("payload", {}).get("seq", -1) < seq
                or (cached_doc is not None and cached_doc["version"] != row.version)
            ):
                stale.append(device)
        self.result.stale = len(stale)
        if stale:
            self.result.problems.append(f"stale: {stale[:5]}")

    def _recovery(self, acked: list[Post], fault_end: float, max_recovery_s: float) -> None:
        """Seconds from the end of the fault until writers are answered again and everything
        acknowledged before then is stored."""
        writers = self.ledger.first_ack_after(fault_end)
        seen = self.stored.first_seen
        before = [seen.get(p.request_id) if p.request_id is not None else None for p in acked if p.done <= fault_end]
        if writers is None or None in before:
            self.result.recovered_s = None
            self.result.problems.append("did not recover")
            return
        stored_at = max([t for t in before if t is not None], default=fault_end)
        self.result.recovered_s = max(0.0, writers - fault_end, stored_at - fault_end)
        if self.result.recovered_s > max_recovery_s:
            self.result.problems.append(f"recovery took {self.result.recovered_s:.1f}s (limit {max_recovery_s:.0f}s)")
