"""Faults that hang instead of fail: a frozen server, a frozen worker, a slow network, a deploy.

``scripts/stack stop`` makes a dependency refuse connections, which every client notices at
once. Real outages more often hang: a frozen VM, a full network buffer, a long GC pause, a
partition. Connections stay open and nothing answers, so only timeouts can tell. These
scenarios inject that from outside: SIGSTOP to a server and all its processes (SIGCONT after a
while), SIGSTOP to one worker process past its session timeout (a zombie that wakes up), a TCP
proxy that delays every answer, and a rolling deploy. Each returns a
:class:`~tests.chaos.harness.Result` with the ledger's checks plus its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import threading
import time

from core.settings import Settings
from tests.chaos.harness import Result, Run
from tests.chaos.load import Post, Readers
from tests.chaos.system import ROOT, descendants, http_get, log, token, wait_until

WARM_UP_S = 5
HIT_P99_LIMIT_S = 0.1  # a cache hit never touches PostgreSQL: generous for a busy 2-core machine
ANSWER_MARGIN_S = 3.0  # beyond the send timeout: scheduling on a busy 2-core machine


def server_pids(server: str) -> list[int]:
    """The server's main process and everything below it (PostgreSQL's backends, say)."""
    main = int(subprocess.check_output([str(ROOT / "scripts" / "stack"), "pid", server], text=True).strip())
    return [main, *descendants(main)]


@contextlib.contextmanager
def frozen(pids: list[int]):
    """SIGSTOP ``pids`` for the block; SIGCONT whatever happens."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def freeze(scenario: str, server: str, seconds: float) -> tuple[float, float]:
    pids = server_pids(server)
    log(f"{scenario}: freezing {server} ({len(pids)} processes) for {seconds:.0f} s")
    began = time.monotonic()
    with frozen(pids):
        time.sleep(seconds)
    thawed = time.monotonic()
    log(f"{scenario}: {server} thawed")
    return began, thawed


def _slow_answers(run: Run, limit_s: float, since: float = 0.0) -> list[Post]:
    """Posts answered (or given up on) later than ``limit_s`` after they were sent."""
    with run.ledger.lock:
        return [p for p in run.ledger.posts if p.sent >= since and p.done - p.sent > limit_s]


def postgres_freeze(settings: Settings, short: bool) -> Result:
    """PostgreSQL frozen: writers are still answered (the API does not need it to accept), the
    worker waits and goes on from where it was when it thaws."""
    seconds = 15 if short else 30
    run = Run(settings, "postgres-freeze")
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S)
        began, thawed = freeze(run.scenario, "postgres", seconds)
        time.sleep(10)
        result = run.finish(devices, fault_end=thawed, max_recovery_s=60)
        during = [p for p in run.ledger.acked() if began + 1 <= p.sent <= thawed - 1]
        if not during:
            result.problems.append("no event was accepted while PostgreSQL was frozen")
        slow = _slow_answers(run, settings.kafka_send_timeout_ms / 1000 + ANSWER_MARGIN_S)
        if slow:
            result.problems.append(f"{len(slow)} posts waited longer than the send timeout")
        result.figures["accepted_while_frozen"] = len(during)
        return result


def redis_freeze(settings: Settings, short: bool) -> Result:
    """Redis frozen: every read still answered (from PostgreSQL once Redis times out), writers too
    (rate limits and idempotency fail open on Redis's own timeouts)."""
    seconds = 10 if short else 20
    run = Run(settings, "redis-freeze")
    with run.running():
        devices = run.devices().start()
        wait_until(lambda: run.stored.first_seen, 30)
        readers = Readers(run.system.url, run.ledger, devices.ids).start()
        time.sleep(WARM_UP_S)
        _, thawed = freeze(run.scenario, "redis", seconds)
        time.sleep(10)
        readers.stop()
        result = run.finish(devices, fault_end=thawed, max_recovery_s=30)
        failed = [status for _, status in run.ledger.reads if status not in (200, 404)]
        if failed:
            result.problems.append(f"{len(failed)} of {len(run.ledger.reads)} reads failed: {failed[:5]}")
        refused = run.ledger.count(lambda p: p.status != 202)
        if refused:
            result.problems.append(f"{refused} posts were not accepted while only Redis hung")
        return result


def kafka_freeze(settings: Settings, short: bool) -> Result:
    """Kafka frozen: every post is answered within the send timeout (503 while frozen, never a
    hang), and writers are accepted again within seconds of the thaw."""
    seconds = 10 if short else 20
    run = Run(settings, "kafka-freeze")
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S)
        _, thawed = freeze(run.scenario, "kafka", seconds)
        time.sleep(15)
        result = run.finish(devices, fault_end=thawed, max_recovery_s=20)
        limit = settings.kafka_send_timeout_ms / 1000 + ANSWER_MARGIN_S
        slow = _slow_answers(run, limit)
        if slow:
            worst = max(p.done - p.sent for p in slow)
            result.problems.append(f"{len(slow)} posts took over {limit:.0f}s to be answered (longest {worst:.1f}s)")
        unanswered = run.ledger.count(lambda p: p.status == 0)
        if unanswered:
            result.problems.append(f"{unanswered} posts got no answer at all")
        return result


def worker_zombie(settings: Settings, short: bool) -> Result:
    """One worker process frozen past its session timeout while its group moves on, then thawed:
    its late work changes nothing (no duplicate, nothing stale) and it never commits over the
    member that took its partitions."""
    seconds = 20 if short else 25
    run = Run(settings, "worker-zombie")
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S + 5)
        assert run.system.worker is not None  # running()
        children = descendants(run.system.worker.pid)
        zombie = children[0]
        log(f"{run.scenario}: freezing worker process {zombie} for {seconds} s (session timeout 10 s)")
        with frozen([zombie]):
            time.sleep(seconds)
        thawed = time.monotonic()
        time.sleep(15)
        result = run.finish(devices, fault_end=thawed, max_recovery_s=30)
        lines = []
        for path in sorted(run.system.logs.glob("worker-*.log")):
            for text in path.read_text(errors="replace").splitlines():
                if text.startswith("{"):
                    with contextlib.suppress(ValueError):
                        lines.append(json.loads(text))
        woke = [line for line in lines if line.get("pid") == zombie]
        noticed = [line for line in woke if line.get("message") in ("partitions lost", "partitions revoked")]
        if not noticed:
            result.problems.append(f"the zombie ({zombie}) never noticed it had lost its partitions")
        # what it tried to commit after waking was refused (its member id had expired)
        refused = [line for line in woke if line.get("message") == "offset commit failed; will retry"]
        result.figures["commits_refused"] = len(refused)
        return result


def deploy(settings: Settings, short: bool) -> Result:
    """A rolling deploy under load: gunicorn reloads its workers (SIGHUP) and the worker is
    replaced (SIGTERM, then a new one) in turn; not one request fails, each stop drains in time."""
    rounds = 2 if short else 4
    run = Run(settings, "deploy")
    stops: list[float] = []
    drain_budget_s = 30 + 10 + 10 + settings.kafka_send_timeout_ms / 1000  # --shutdown-timeout + commit + close
    with run.running():
        devices = run.devices().start()
        time.sleep(WARM_UP_S)
        for i in range(rounds):
            log(f"{run.scenario}: round {i + 1}/{rounds}: gunicorn SIGHUP, then the worker replaced")
            assert run.system.api is not None and run.system.worker is not None  # running()
            run.system.api.send_signal(signal.SIGHUP)
            time.sleep(3)
            old = run.system.worker
            began = time.monotonic()
            old.send_signal(signal.SIGTERM)
            run.system.start_worker()  # the new task starts while the old one drains, as ECS does
            old.wait(timeout=drain_budget_s + 30)
            stops.append(time.monotonic() - began)
            time.sleep(3)
        fault_end = time.monotonic()
        time.sleep(10)
        result = run.finish(devices, fault_end=fault_end, max_recovery_s=30)
        failed = run.ledger.count(lambda p: p.status != 202)
        if failed:
            result.problems.append(f"{failed} requests failed during the deploy")
        if any(s > drain_budget_s for s in stops):
            result.problems.append(f"a worker stop took longer than the drain budget: {stops}")
        result.figures["worker_stops_s"] = ",".join(f"{s:.1f}" for s in stops)
        return result


class DelayProxy:
    """A TCP proxy on a free loopback port in front of ``port`` that can delay every answer.

    ``delay_s`` is added before each chunk travelling back from the server, so each round trip
    costs that much more: a slow network or an overloaded server, not a dead one.
    """

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.delay_s = 0.0
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, server_writer, delayed=False),
            self._pump(server_reader, client_writer, delayed=True),
            return_exceptions=True,
        )

    async def _pump(self, reader, writer, *, delayed: bool) -> None:
        try:
            while data := await reader.read(65536):
                if delayed and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


class HitTimer(threading.Thread):
    """GETs one device's resource over and over, timing the answers served from the cache."""

    def __init__(self, url: str, device: str) -> None:
        super().__init__(daemon=True)
        self.url, self.device = url, device
        self.hits: list[tuple[float, float]] = []  # (when, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {token()}"}
        while not self.stop.wait(0.05):
            conn = http.client.HTTPConnection(self.url, timeout=10)
            try:
                began = time.monotonic()
                conn.request("GET", f"/resource/{self.device}", headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200 and response.getheader("X-Cache") == "HIT":
                    self.hits.append((began, time.monotonic() - began))
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()


def slow_dependency(settings: Settings, short: bool) -> Result:
    """PostgreSQL answers 200 ms late for a minute (a TCP proxy in front of it): cache-hit reads
    stay fast, posts are answered as usual (they do not touch PostgreSQL), the worker falls behind
    and catches up, keeping order; nothing lost."""
    seconds = 20 if short else 60
    proxy = DelayProxy(settings.postgres_port).start()
    run = Run(settings, "slow-dependency", env={"POSTGRES_PORT": str(proxy.port)})
    try:
        with run.running():
            devices = run.devices().start()
            wait_until(lambda: len(run.stored.first_seen) >= len(devices.ids), 30)
            readers = Readers(run.system.url, run.ledger, devices.ids).start()
            quiet = f"chaos-{run.run_id}-quiet"  # a device that posted once: its reads stay hits
            _post_once(run.system.url, quiet)
            wait_until(
                lambda: (
                    http_get(run.system.url, f"/resource/{quiet}", {"Authorization": f"Bearer {token()}"})[0] == 200
                ),
                30,
            )
            timer = HitTimer(run.system.url, quiet)
            timer.start()
            time.sleep(WARM_UP_S)
            log(f"{run.scenario}: PostgreSQL answers 200 ms late for {seconds} s")
            began = time.monotonic()
            proxy.delay_s = 0.2
            time.sleep(seconds)
            proxy.delay_s = 0.0
            ended = time.monotonic()
            time.sleep(10)
            readers.stop()
            timer.stop.set()
            timer.join(15)
            result = run.finish(devices, fault_end=ended, max_recovery_s=60)
            hits = sorted(d for t, d in timer.hits if began <= t <= ended)
            if not hits:
                result.problems.append("no cache hit was timed while PostgreSQL was slow")
            else:
                p99 = hits[min(len(hits) - 1, int(0.99 * len(hits)))]
                result.figures["hit_p99_ms"] = round(p99 * 1000, 1)
                if p99 > HIT_P99_LIMIT_S:
                    result.problems.append(f"cache hits slowed down: p99 {p99 * 1000:.0f} ms while PostgreSQL was slow")
            with run.ledger.lock:
                reads_during = [status for t, status in run.ledger.reads if began <= t <= ended]
            if any(status != 200 for status in reads_during):
                result.problems.append(f"reads failed while PostgreSQL was slow: {sorted(set(reads_during))}")
            slow = _slow_answers(run, 1.0, since=began)
            if slow:
                result.problems.append(f"{len(slow)} posts took over 1 s while only PostgreSQL was slow")
            result.figures["reads_while_slow"] = len(reads_during)
            return result
    finally:
        proxy.stop()


def _post_once(url: str, device: str) -> None:
    conn = http.client.HTTPConnection(url, timeout=10)
    try:
        body = json.dumps({"device_id": device, "payload": {"seq": 0}})
        headers = {"Authorization": f"Bearer {token()}", "Content-Type": "application/json"}
        conn.request("POST", "/events", body=body, headers=headers)
        conn.getresponse().read()
    finally:
        conn.close()


HANG_SCENARIOS = {
    "postgres-freeze": postgres_freeze,
    "redis-freeze": redis_freeze,
    "kafka-freeze": kafka_freeze,
    "worker-zombie": worker_zombie,
    "deploy": deploy,
    "slow-dependency": slow_dependency,
}
