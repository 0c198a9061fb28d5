"""Load shedding (app/overload.py): beyond API_MAX_IN_FLIGHT requests in progress, a request is
answered 503 + Retry-After at once; health checks are never shed; every way out frees the slot.

Requests are held in flight by a broker whose acknowledgements wait for the test, and sent from
threads (the Flask test client serves each request in the calling thread)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app import create_app
from app.services import services
from broker import StubBroker, set_broker
from tests.helpers import free_port, http, stop_processes, wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.stack  # the rate limit on POST /events reads Redis


@pytest.fixture(autouse=True)
def kafka_broker_back(api_broker):
    """create_app makes its broker the process's global one: give the other tests Kafka back."""
    yield
    set_broker(api_broker)


class HeldBroker(StubBroker):
    """A stub broker whose acknowledgements come only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waiting = 0
        self._count = threading.Lock()  # the requests' threads count together

    def _produce(self, topic, key, value, headers):
        with self._count:
            self.waiting += 1
        self.release.wait(10)
        return super()._produce(topic, key, value, headers)


@pytest.fixture
def held(settings):
    broker = HeldBroker()
    app = create_app(settings.replace(api_max_in_flight=2, rate_limit_events="1000/second"), broker=broker)
    yield app, broker
    broker.release.set()


def _post(app, token, device):
    return app.test_client().post(
        "/events", json={"device_id": device, "payload": {}}, headers={"Authorization": f"Bearer {token}"}
    )


def test_a_request_beyond_the_ceiling_gets_503_at_once_and_the_admitted_ones_finish(held, make_token, unique):
    app, broker = held
    token = make_token(roles=("admin",), sub=f"shed-{unique}")
    with ThreadPoolExecutor(2) as pool:
        admitted = [pool.submit(_post, app, token, f"shed-{unique}-{i}") for i in range(2)]
        wait_for(lambda: broker.waiting == 2, timeout=10, message="two requests waiting for Kafka")
        refused = _post(app, token, f"shed-{unique}-late")
        assert refused.status_code == 503 and refused.is_json
        assert refused.json["error"] == "overloaded" and refused.headers["Retry-After"] == "1"
        assert refused.headers["X-Request-ID"]  # logged and counted like any request
        assert app.test_client().get("/healthz").status_code == 200  # never shed
        broker.release.set()
        assert [f.result(10).status_code for f in admitted] == [202, 202]
    assert services(app).in_flight.current == 0
    assert _post(app, token, f"shed-{unique}-after").status_code == 202


def test_every_way_out_of_a_request_frees_its_slot(held, make_token, unique, monkeypatch):
    app, broker = held
    broker.release.set()
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token(roles=('admin',), sub=f'ways-{unique}')}"}
    event = {"device_id": f"ways-{unique}", "payload": {}}
    statuses = [
        client.post("/events", data="not json", headers={**headers, "Content-Type": "application/json"}).status_code,
        client.post("/events", json=event).status_code,  # no token
        client.get("/nowhere").status_code,
    ]
    monkeypatch.setattr("app.events.event_schema.load", lambda body: 1 / 0)  # a bug: the view raises
    statuses.append(client.post("/events", json=event, headers=headers).status_code)
    assert statuses == [400, 401, 404, 500]
    assert services(app).in_flight.current == 0


def test_zero_turns_shedding_off(settings):
    app = create_app(settings.replace(api_max_in_flight=0), broker=StubBroker())
    assert services(app).in_flight is None


def _metric(url: str, token: str, name: str) -> float:
    status, _, body = http("GET", f"{url}/metrics", token)
    assert status == 200
    values = [float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def _reads_first_app(settings, monkeypatch, oldest_wait: float):
    """An app with reads first on (as under gunicorn's gevent worker) whose oldest queued write
    has waited ``oldest_wait`` seconds."""
    from core import turns

    monkeypatch.setattr(turns, "_enabled", {})
    monkeypatch.setattr(turns.monkey, "is_module_patched", lambda name: True)
    monkeypatch.setattr(turns, "give_way", lambda: None)  # the test client runs no gevent loop
    monkeypatch.setattr(turns, "oldest_wait", lambda: oldest_wait)
    changes = {"api_reads_first": 1, "api_max_write_wait_ms": 100, "rate_limit_events": "1000/second"}
    return create_app(settings.replace(**changes), broker=StubBroker())


def test_writes_are_shed_at_once_while_the_oldest_write_waits_too_long(settings, monkeypatch, make_token, unique):
    app = _reads_first_app(settings, monkeypatch, oldest_wait=0.5)
    token = make_token(roles=("admin",), sub=f"wait-{unique}")
    refused = _post(app, token, f"wait-{unique}")
    assert refused.status_code == 503 and refused.json["error"] == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    read = app.test_client().get(f"/resource/wait-{unique}", headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 404  # reads are never shed for the writes' queue: served (not found)


def test_writes_are_admitted_while_the_queue_moves(settings, monkeypatch, make_token, unique):
    app = _reads_first_app(settings, monkeypatch, oldest_wait=0.05)
    token = make_token(roles=("admin",), sub=f"moves-{unique}")
    assert _post(app, token, f"moves-{unique}").status_code == 202


@pytest.mark.slow
def test_under_gunicorn_a_kafka_stall_fills_the_ceiling_and_the_rest_is_refused_at_once(settings, make_token, unique):
    """The real thing: gunicorn with a gevent worker, Kafka frozen from outside (SIGSTOP) so the
    acknowledgements stop. Four requests wait for Kafka; the fifth is refused at once, health
    checks and /metrics still answer, and once Kafka thaws the four are accepted."""
    token = make_token(roles=("admin",), sub=f"stall-{unique}")
    kafka = int((Path(os.environ.get("STACK_DIR", ROOT / ".stack")) / "run" / "kafka.pid").read_text())
    with _api(settings, API_MAX_IN_FLIGHT="4", KAFKA_SEND_TIMEOUT_MS="20000") as (url, _):
        event = {"device_id": f"stall-{unique}", "payload": {}}
        assert http("POST", f"{url}/events", token, event)[0] == 202  # the producer is connected
        os.kill(kafka, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(4) as pool:
                waiting = [pool.submit(http, "POST", f"{url}/events", token, event) for _ in range(4)]
                wait_for(lambda: _metric(url, token, "http_requests_in_flight") == 4, timeout=10,
                         message="four requests waiting for Kafka")  # fmt: skip
                started = time.monotonic()
                status, headers, body = http("POST", f"{url}/events", token, event)
                assert (status, json.loads(body)["error"], headers["Retry-After"]) == (503, "overloaded", "1")
                assert time.monotonic() - started < 2  # at once, not after Kafka's timeout
                assert http("GET", f"{url}/healthz")[0] == 200
                assert _metric(url, token, 'http_requests_shed_total{reason="in_flight"}') == 1
                os.kill(kafka, signal.SIGCONT)
                assert [f.result(30)[0] for f in waiting] == [202, 202, 202, 202]
        finally:
            os.kill(kafka, signal.SIGCONT)  # again, if an assertion failed first: a no-op otherwise
        assert _metric(url, token, "http_requests_in_flight") == 0


@pytest.mark.slow
def test_under_gunicorn_requests_that_waited_for_a_stopped_worker_are_refused_at_once(settings, make_token, unique):
    """CPU starvation, made exact: the gevent worker is stopped (SIGSTOP) for a second while
    requests arrive, as a worker starved of CPU would be. Resumed, its event loop is a second
    late: those requests get 503 at once (they would be served after their clients gave up);
    once the loop has caught up, requests are served again."""
    token = make_token(roles=("admin",), sub=f"starved-{unique}")
    event = {"device_id": f"starved-{unique}", "payload": {}}
    with _api(settings, API_MAX_LOOP_LAG_MS="250") as (url, api):
        port = int(url.rsplit(":", 1)[1])
        assert http("POST", f"{url}/events", token, event)[0] == 202
        (worker,) = (int(pid) for pid in Path(f"/proc/{api.pid}/task/{api.pid}/children").read_text().split())
        os.kill(worker, signal.SIGSTOP)
        try:
            # the kernel completes the connections and buffers the requests while the worker is stopped
            waiting = [_send_raw(port, token, event) for _ in range(3)]
            stopped_at = time.monotonic()
            wait_for(lambda: time.monotonic() - stopped_at > 1.0, timeout=5, interval=0.1)
        finally:
            os.kill(worker, signal.SIGCONT)
        answers = [_read_raw(sock) for sock in waiting]
        assert [status for status, _ in answers] == [503, 503, 503]
        assert all(json.loads(body)["error"] == "overloaded" for _, body in answers)
        probes: list[int] = []  # until the sampler's next tick (50 ms) the loop still reads as late
        wait_for(lambda: probes.append(http("POST", f"{url}/events", token, event)[0]) or probes[-1] == 202,
                 timeout=10, message="served again once the loop caught up")  # fmt: skip
        assert set(probes[:-1]) <= {503}
        assert _metric(url, token, 'http_requests_shed_total{reason="loop_lag"}') == 3 + len(probes) - 1


def _send_raw(port: int, token: str, event: dict) -> socket.socket:
    body = json.dumps(event).encode()
    head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def _read_raw(sock: socket.socket) -> tuple[int, bytes]:
    with sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@contextlib.contextmanager
def _api(settings, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """The API under gunicorn with one gevent worker, as deployed but for ``env``; its URL and
    master process, once it answers /healthz."""
    port = free_port()
    environ = {**os.environ, "APP_ENV": "development", "JWT_SECRET": settings.jwt_secret, "WEB_CONCURRENCY": "1",
               "POSTGRES_PASSWORD": settings.postgres_password, "BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "WARNING",
               **env}  # fmt: skip
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    api = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                           cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=60, message="gunicorn answers /healthz")
        yield url, api
    finally:
        stop_processes([api])


def _answers(url: str) -> bool:
    try:
        return http("GET", f"{url}/healthz")[0] == 200
    except OSError:
        return False
