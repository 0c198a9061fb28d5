"""The benchmark's read-under-ingest section (``--only mixed``), and the open-loop load and servers
it shares with the FastAPI-peer section (``bench/peer_section.py``) and ``bench.ab``.

mixed: open loop (vegeta at constant rates), cache-hit ``GET /resource/<id>`` at 800/s with
``POST /events`` beside it at 0/100/250/500/s and at twice the POST capacity, first for the API
alone (no worker), then for the whole system on one host (``worker.py`` running, its own group
from the end of ``events-input``) with the freshness probe (202 -> the payload visible through
``GET``) running beside the load.

Every clock is the load generator's (vegeta or wrk on the same 2 cores as everything else):
from writing the request to reading the whole answer, connection set-up included when vegeta
opens a new one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench.common import (
    BIN,
    DETAILS,
    PEERS_PY,
    ROOT,
    ROWS,
    SECRET,
    Row,
    answers,
    forget_resource,
    gunicorn,
    say,
    start_worker,
    store_resource,
    token,
)
from bench.load import event_targets, wrk_output
from tests.helpers import free_port, http, start_group_at_end, wait_for

GET_RATE = 800
# Connections per vegeta (one for the GETs, one for the POSTs), as a load balancer in front keeps a
# bounded pool to each target; unbounded, vegeta opens a new connection for every request it cannot
# put on a busy one, and under overload those wait in the kernel's accept queue until they time out,
# where no server can shed them (docs/performance.md). Requests beyond the pool wait in vegeta,
# and that wait is inside the latency it reports.
MAX_CONNECTIONS = int(os.environ.get("BENCH_MAX_CONNECTIONS", "256"))


# ------------------------------------------------------------------ load generators


def _percentiles(latencies_ms: list[float]) -> dict:
    if not latencies_ms:
        return {"n": 0}
    s = sorted(latencies_ms)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(len(s) * q))]

    return {"n": len(s), "p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": s[-1]}


def _decode(results: Path) -> list[dict]:
    """vegeta's binary results as dicts (code, latency in ns, timestamp)."""
    out = subprocess.run([str(BIN / "vegeta"), "encode", "-to", "json", str(results)], capture_output=True,
                         check=True).stdout  # fmt: skip
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _summary(results: list[dict], seconds: float) -> dict:
    codes: dict[str, int] = {}
    for r in results:
        codes[str(r["code"])] = codes.get(str(r["code"]), 0) + 1
    ok = [r["latency"] / 1e6 for r in results if 200 <= r["code"] < 300]
    summary = _percentiles([r["latency"] / 1e6 for r in results])
    summary.update(codes=codes, ok_per_s=len(ok) / seconds, shed=codes.get("503", 0),
                   failed=len(results) - len(ok) - codes.get("503", 0))  # fmt: skip
    shed = [r["latency"] / 1e6 for r in results if r["code"] == 503]
    if shed:
        summary["shed_p99_ms"] = _percentiles(shed)["p99_ms"]
    return summary


def _attack(targets: str, rate: int, seconds: int, out: Path) -> subprocess.Popen:
    target_file = out.with_suffix(".targets")
    target_file.write_text(targets)
    command = [str(BIN / "vegeta"), "attack", f"-rate={rate}", f"-duration={seconds}s", "-timeout=10s",
               f"-max-connections={MAX_CONNECTIONS}", f"-targets={target_file}", f"-output={out}"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def open_loop(
    url: str, auth: dict, get_id: str, post_rate: int, seconds: int, prefix: str, post_url: str | None = None
) -> dict:
    """GET at GET_RATE/s and POST at ``post_rate``/s at once, each its own vegeta (the POSTs to
    ``post_url`` when the writes have a pool of their own)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        get_targets = f"GET {url}/resource/{get_id}\nAuthorization: {auth['Authorization']}\n"
        attacks = {"get": _attack(get_targets, GET_RATE, seconds, tmp_path / "get.bin")}
        if post_rate:
            post_targets = event_targets(tmp_path, post_url or url, auth, prefix)
            attacks["post"] = _attack(post_targets, post_rate, seconds, tmp_path / "post.bin")
        for attack in attacks.values():
            attack.wait(seconds + 60)
        return {name: _summary(_decode(tmp_path / f"{name}.bin"), seconds) for name in attacks}


def wrk_run(url: str, connections: int, seconds: int, headers: dict, body: dict | None = None) -> dict:
    """wrk (1 thread): 2xx answers per second, p99 (ms) and the count of other answers."""
    out = wrk_output(url, connections, seconds, headers, body)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
    errors = int(bad.group(1)) if bad else 0
    took_s = float(done.group(2)) * scale[done.group(3)] / 1000
    return {"rate": (int(done.group(1)) - errors) / took_s,  # answered 2xx per second: a 503 is no service
            "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None, "errors": errors}  # fmt: skip


# ------------------------------------------------------------------ servers


@contextmanager
def fastapi_peer(topic: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """The document's stack on uvicorn, 2 worker processes (as ours has 2 gunicorn workers)."""
    if not PEERS_PY.exists():
        raise SystemExit("bench: the peers' venv is missing (make bench creates .stack/bench-venv)")
    from core.settings import load_settings

    settings = load_settings(require_jwt=False)
    port = free_port()
    env = {**os.environ, "JWT_SECRET": SECRET, "PEER_TOPIC": topic, "PYTHONPATH": str(ROOT),
           "REDIS_URL": settings.redis_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}  # fmt: skip
    log = open(Path(tempfile.gettempdir()) / f"bench-fastapi-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(PEERS_PY), "-m", "uvicorn", "bench.fastapi_peer:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2", "--loop", "uvloop", "--http", "httptools",
                             "--no-access-log", "--log-level", "warning"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url + "/healthz"), timeout=30, message="the FastAPI peer answering")
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


API_ENV = {"CACHE_TTL_SECONDS": "3600", "RATE_LIMIT_EVENTS": "10000000/second", "LOG_LEVEL": "INFO"}


@contextmanager
def scratch_topic(name: str) -> Iterator[str]:
    from kafka import KafkaAdminClient

    from broker.brokers.kafka import client_options
    from core.settings import load_settings

    admin = KafkaAdminClient(**client_options(**load_settings(require_jwt=False).kafka_options))
    admin.create_topics({name: {"num_partitions": 6, "replication_factor": 1}})
    admin.wait_for_topics([name])
    try:
        yield name
    finally:
        admin.delete_topics([name])
        admin.close()


def _cached_resource(url: str, token: str) -> str:
    """A stored resource whose cache entry our API has filled (the peer reads the same key)."""
    device = f"bench-hit-{uuid.uuid4().hex[:8]}"
    store_resource(device)
    status, _, _ = http("GET", f"{url}/resource/{device}", token)
    assert status == 200, status
    return device


# ------------------------------------------------------------------ freshness beside the load


class FreshnessProbe(threading.Thread):
    """POST a new payload for its own device, then GET every 5 ms until it shows; 100 ms between
    probes (lighter than ``bench.ingest_section.freshness``'s 2 / 50 ms, which at a second's freshness added
    hundreds of GETs a second to the load it measured)."""

    def __init__(self, url: str, auth: dict, post_url: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.post_url, self.auth = url, post_url or url, auth
        self.device = f"bench-fresh-{uuid.uuid4().hex[:8]}"
        self.samples: list[float] = []
        self.timeouts = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import http.client

        def connect(url: str) -> http.client.HTTPConnection:
            host, port = url.removeprefix("http://").split(":")
            return http.client.HTTPConnection(host, int(port), timeout=10)

        conn, writes = connect(self.url), connect(self.post_url)
        headers = {**self.auth, "Content-Type": "application/json"}
        while not self.stop.is_set():
            marker = uuid.uuid4().hex
            try:
                writes.request("POST", "/events", json.dumps({"device_id": self.device, "payload": {"m": marker}}),
                             headers)  # fmt: skip
                response = writes.getresponse()
                response.read()
                if response.status != 202:
                    time.sleep(0.1)
                    continue
                accepted = time.perf_counter()
                while time.perf_counter() - accepted < 10:
                    conn.request("GET", f"/resource/{self.device}", headers=self.auth)
                    response = conn.getresponse()
                    data = response.read()
                    if response.status == 200 and json.loads(data)["payload"].get("m") == marker:
                        self.samples.append((time.perf_counter() - accepted) * 1000)
                        break
                    time.sleep(0.005)
                else:
                    self.timeouts += 1
            except (OSError, http.client.HTTPException):
                conn.close()
                writes.close()
                conn, writes = connect(self.url), connect(self.post_url)
            self.stop.wait(0.1)

    def result(self) -> dict:
        return {**_percentiles(self.samples), "timeouts": self.timeouts}


# ------------------------------------------------------------------ sections


def post_capacity(url: str, auth: dict, seconds: int) -> float:
    body = {"device_id": f"bench-cap-{uuid.uuid4().hex[:6]}", "payload": {"status": "online", "temp_c": 37.2}}
    return max(wrk_run(f"{url}/events", c, seconds, auth, body)["rate"] for c in (8, 32))


def bench_mixed(seconds: int, rates: str = "0,100,250,500,2x", modes: str = "api_alone,whole_system") -> None:
    """``rates``: POST/s beside the GETs, ``2x`` for twice the POST capacity. ``modes``: the API
    alone (``api_alone``), the whole system (``whole_system``: with the worker), and either of
    them with the writes in a gunicorn of their own on another port at ``nice 10`` (``_split``:
    as separate services behind load-balancer path rules; docs/performance.md)."""
    auth = {"Authorization": f"Bearer {token()}"}
    bearer = auth["Authorization"].removeprefix("Bearer ")
    run = uuid.uuid4().hex[:8]
    rows: dict[str, list[dict]] = {mode: [] for mode in modes.split(",")}
    forget: list[str] = []
    from core.settings import load_settings

    settings = load_settings(require_jwt=False)
    split = any(mode.endswith("_split") for mode in rows)
    writes_pool = gunicorn("wsgi:app", API_ENV, prefix=("nice", "-n", "10")) if split else nullcontext((None, None))
    with gunicorn("wsgi:app", API_ENV) as (url, _), writes_pool as (write_url, _):
        hit = _cached_resource(url, bearer)
        forget.append(hit)
        capacity = DETAILS.get("post_max_rate") or post_capacity(url, auth, 5)
        overload = int(2 * capacity)
        say(f"mixed: POST capacity {capacity:.0f}/s, overload {overload}/s")
        post_rates = [overload if r == "2x" else int(r) for r in rates.split(",")]
        for mode in rows:
            worker = probe = None
            post_url = write_url if mode.endswith("_split") else None
            if mode.startswith("whole_system"):
                group = f"bench-mixed-{run}"
                start_group_at_end(settings.kafka_options, group, "events-input")
                worker = start_worker(["--group", group])
                time.sleep(5)  # the worker joins its group (it would otherwise start behind)
            try:
                for rate in post_rates:
                    if worker is not None:
                        probe = FreshnessProbe(url, auth, post_url)
                        forget.append(probe.device)
                        probe.start()
                    prefix = f"bench-mixed-{run}-{rate}"
                    forget.extend(f"{prefix}-{i}" for i in range(1000))
                    result = open_loop(url, auth, hit, rate, seconds, prefix, post_url)
                    result["post_rate"] = rate
                    if probe is not None:
                        probe.stop.set()
                        probe.join(15)
                        result["freshness"] = probe.result()
                    rows[mode].append(result)
                    get, post = result["get"], result.get("post", {})
                    say(f"mixed {mode} {rate} POST/s: GET p99 {get['p99_ms']:.1f} ms max {get['max_ms']:.0f}; "
                          f"POST p99 {post.get('p99_ms', 0):.1f} ms, {post.get('ok_per_s', 0):.0f} accepted/s, "
                          f"shed {post.get('shed', 0)}; fresh {result.get('freshness', {})}")  # fmt: skip
            finally:
                if worker is not None:
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(60)
    forget_resource(*forget)
    DETAILS["mixed"] = {"get_rate": GET_RATE, "seconds": seconds, "post_capacity": capacity, **rows}
    TABLES.append(mixed_table(rows, overload))
    goals = {"api_alone": 15, "whole_system": 50, "api_split": 15, "whole_system_split": 50}
    for mode, results in rows.items():
        name = mode.replace("_", " ")
        at500 = next((r for r in results if r["post_rate"] == 500), None)
        if at500 is not None:
            p99 = at500["get"]["p99_ms"]
            ROWS.append(Row(f"mixed, {name}: GET p99 at 800 GET/s + 500 POST/s, ms", p99, unit="ms",
                                goal=f"<= {goals[mode]} ms", met=p99 <= goals[mode]))  # fmt: skip
            fresh = at500.get("freshness")
            if fresh and fresh.get("n"):
                ROWS.append(Row(f"mixed, {name}: freshness p99 at 500 POST/s, ms", fresh["p99_ms"], unit="ms",
                                    goal="<= 100 ms", met=fresh["p99_ms"] <= 100))  # fmt: skip
        over = next((r for r in results if r["post_rate"] == overload), None)
        if over is not None:
            accepted = over["post"]["ok_per_s"]
            ROWS.append(Row(f"mixed, {name}: accepted POST/s at 2x capacity ({overload}/s offered)", accepted,
                                capacity, "POST capacity (wrk)", "events/s", ">= 0.9x",
                                accepted >= 0.9 * capacity))  # fmt: skip


TABLES: list[str] = []


def mixed_table(rows: dict[str, list[dict]], overload: int) -> str:
    """One line per mode and POST rate: the GETs' latencies, the POSTs' outcome, freshness."""
    lines = [
        "| mode | POST/s offered | GET p50 / p99 / p99.9 / max, ms | GETs not 200 | POST p99, ms | "
        "accepted/s | shed (503) | failed | freshness p50 / p99, ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, results in rows.items():
        for r in results:
            g, p, f = r["get"], r.get("post"), r.get("freshness")
            rate = f"{r['post_rate']} (2x)" if r["post_rate"] == overload else str(r["post_rate"])
            get = f"{g['p50_ms']:.1f} / {g['p99_ms']:.1f} / {g['p999_ms']:.1f} / {g['max_ms']:.0f}"
            post = (f"{p['p99_ms']:.1f} | {p['ok_per_s']:.0f} | {p['shed']} | {p['failed']}" if p
                    else " | | | ")  # fmt: skip
            fresh = f"{f['p50_ms']:.0f} / {f['p99_ms']:.0f}" if f and f.get("n") else ""
            lines.append(
                f"| {mode.replace('_', ' ')} | {rate} | {get} | {g['shed'] + g['failed']} | {post} | {fresh} |"
            )
    return "\n".join(lines)
