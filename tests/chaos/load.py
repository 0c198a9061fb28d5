"""The chaos suite's load and its ledger: devices posting events at a steady rate, each with its own
sequence number, every answer recorded (:class:`Ledger`); readers and the async actor's sender
beside them; and :class:`Stored`, which watches PostgreSQL for when each acknowledged event first
appears. These are what a run's verdict (:mod:`tests.chaos.harness`) is checked against.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from sqlalchemy import Engine, text

from broker.errors import BrokerError
from tests.chaos.system import http_get, token


@dataclass(frozen=True)
class Post:
    device: str
    seq: int
    status: int  # 0: no answer (timeout, connection refused)
    request_id: str | None
    sent: float
    done: float
    writer: str = ""  # the Devices that posted it: seq counts per writer


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
            self.ledger.add(Post(device, seq, status, request_id, sent, time.monotonic(), self.writer))


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
            status, _ = http_get(self.url, f"/resource/{random.choice(self.devices)}", self.headers, timeout=5)
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
