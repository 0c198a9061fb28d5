"""The API's gunicorn worker, run for real (issue 14, item 6): slow clients cannot lock others out,
a busy keep-alive client cannot starve the others, the errors gunicorn answers itself are JSON,
and each instance has its own control socket.

Each test starts gunicorn with ``gunicorn.conf.py``; only ``/healthz`` is requested, which needs
no server, but the processes make the module slow, so it is in the stack tier.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, wait_for

pytestmark = pytest.mark.stack

HEAD = b"GET /healthz HTTP/1.1\r\nHost: api\r\n"


@contextmanager
def gunicorn(tmp_path: Path, **env: str) -> Iterator[int]:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CONTROL_SOCKET")}
    environ.update({"APP_ENV": "development", "JWT_SECRET": "local-dev-secret", "WEB_CONCURRENCY": "2",
                    "BIND": f"127.0.0.1:{port}", "STACK_DIR": str(tmp_path), **env})  # fmt: skip
    log = open(tmp_path / f"gunicorn-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: _status(port) == 200, timeout=30, message="gunicorn answers /healthz")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer


def _read_response(conn: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536) or b""
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(next(value for name, value in fields.items() if name.lower() == b"content-length"))
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


def _status(port: int) -> int | None:
    try:
        answer = _exchange(port, HEAD + b"Connection: close\r\n\r\n", timeout=2)
    except OSError:
        return None
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def test_slowloris_connections_do_not_lock_new_clients_out(tmp_path):
    """450 clients that drip their headers, against fewer slots than that (2 workers x 150): each
    is cut HEADER_TIMEOUT after it started, so a newcomer is answered within 3 s. Before, each
    held its slot for the keep-alive timeout (75 s) and every newcomer waited for it."""
    with gunicorn(tmp_path, WORKER_CONNECTIONS="150", HEADER_TIMEOUT="2") as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(450)]
        stop = threading.Event()

        def drip() -> None:  # one more header line per connection every second, never the end
            while not stop.wait(1.0):
                for conn in slow:
                    try:
                        conn.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass

        for conn in slow:
            conn.sendall(HEAD)
        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        try:
            started = time.monotonic()
            answer = _exchange(port, HEAD + b"Connection: close\r\n\r\n", timeout=10)
            waited = time.monotonic() - started
            assert answer.startswith(b"HTTP/1.1 200"), answer[:60]
            assert waited < 3.0, f"a new client waited {waited:.1f}s"
        finally:
            stop.set()
            dripper.join()
            for conn in slow:
                conn.close()


def test_an_idle_keep_alive_connection_outlives_the_header_deadline(tmp_path):
    """The deadline is on a request's head, not on the idle wait between requests (which stays at
    the keep-alive timeout, above the load balancer's)."""
    with gunicorn(tmp_path, HEADER_TIMEOUT="1") as port, socket.create_connection(("127.0.0.1", port), 10) as conn:
        conn.sendall(HEAD + b"\r\n")
        assert _read_response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(2.0)  # idle for twice HEADER_TIMEOUT: the very thing under test
        conn.sendall(HEAD + b"\r\n")
        assert _read_response(conn).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("turns", ["0", "1"], ids=["sleep-0", "keepalive-turns"])
def test_a_client_pipelining_many_requests_does_not_make_another_wait_behind_all_of_them(tmp_path, turns):
    """1,000 requests arrive at once on one connection; once it is being answered, one request
    arrives on another. Each of the 1,000 is already in the socket when its turn comes, so without
    a yield between keep-alive requests one greenlet answered them all before the hub looked at
    the other connection again. Either yield (``KEEPALIVE_TURNS``) keeps the other one's turn."""
    pipelined = 1000
    with gunicorn(tmp_path, WEB_CONCURRENCY="1", KEEPALIVE_TURNS=turns) as port:
        busy = socket.create_connection(("127.0.0.1", port), 10)
        other = socket.create_connection(("127.0.0.1", port), 10)
        with busy, other:
            _read_response(_sent(busy, HEAD + b"\r\n"))  # both connections accepted and served once
            _read_response(_sent(other, HEAD + b"\r\n"))
            busy.sendall((HEAD + b"\r\n") * pipelined)
            received = busy.recv(1 << 20)  # the burst is being answered
            answered_other = _read_response(_sent(other, HEAD + b"\r\n"))
            busy.settimeout(0.0)  # what the busy connection had received when the other was answered
            with contextlib.suppress(BlockingIOError):
                while chunk := busy.recv(1 << 20):
                    received += chunk
            assert answered_other.startswith(b"HTTP/1.1 200")
            assert received.count(b"HTTP/1.1 200") < pipelined, "the other connection waited behind all of them"


def _sent(conn: socket.socket, data: bytes) -> socket.socket:
    conn.sendall(data)
    return conn


def test_a_keep_alive_connection_yields_once_before_each_later_request(monkeypatch):
    from core import gunicorn_worker

    yields: list[float] = []
    monkeypatch.setattr(gunicorn_worker.gevent, "sleep", lambda seconds=0: yields.append(seconds))
    wrapped = gunicorn_worker._HeadDeadlineSocket(object(), keepalive=75.0, head_timeout=10.0)
    for _ in range(3):
        with wrapped.reading_head():
            pass
    assert yields == [0, 0]  # none before the first request, one before each later one


def _yields_before_later_requests(monkeypatch, client: object, turns: bool, requests: int = 3) -> list[str]:
    """What the wrapped socket did before each keep-alive request after the first."""
    from core import gunicorn_worker

    done: list[str] = []
    monkeypatch.setattr(gunicorn_worker.turns, "next_request_turn", lambda: done.append("turn"))
    monkeypatch.setattr(gunicorn_worker.gevent, "sleep", lambda seconds=0: done.append(f"sleep({seconds})"))
    wrapped = gunicorn_worker._HeadDeadlineSocket(client, keepalive=75.0, head_timeout=10.0, turns=turns)
    for _ in range(requests):
        with wrapped.reading_head():
            pass
    return done


class _GeventLikeSocket:
    """What gunicorn's gevent worker hands over: gevent's socket, the real one as ``_sock``."""

    def __init__(self, real: socket.socket) -> None:
        real.setblocking(False)
        self._sock = real


def test_with_keepalive_turns_a_request_already_in_the_socket_waits_for_the_loop_turn(monkeypatch):
    """A client whose next request is already there would otherwise jump the queue of the
    connections whose requests arrived first (the tail at 128 connections)."""
    ours, client = socket.socketpair()
    with ours, client:
        client.sendall(HEAD + b"\r\n")
        assert _yields_before_later_requests(monkeypatch, _GeventLikeSocket(ours), turns=True) == ["turn", "turn"]
        assert ours.recv(1 << 16) == HEAD + b"\r\n"  # the peek took nothing from the request


def test_with_keepalive_turns_a_request_not_yet_arrived_takes_no_extra_loop_turn(monkeypatch):
    """Under open-loop load the next request is usually not there yet: the connection then waits
    on its socket like the others, after the same ``sleep(0)`` as without turns."""
    ours, client = socket.socketpair()
    with ours, client:
        done = _yields_before_later_requests(monkeypatch, _GeventLikeSocket(ours), turns=True)
    assert done == ["sleep(0)", "sleep(0)"]


def test_keepalive_turns_on_a_socket_it_cannot_peek_takes_the_turn(monkeypatch):
    assert _yields_before_later_requests(monkeypatch, object(), turns=True) == ["turn", "turn"]


def test_keepalive_turns_are_on_unless_turned_off(monkeypatch):
    from core import gunicorn_worker

    monkeypatch.delenv("KEEPALIVE_TURNS", raising=False)
    assert gunicorn_worker.keepalive_turns() is True


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True)])
def test_keepalive_turns_is_read_when_the_worker_starts(monkeypatch, value, on):
    from core import gunicorn_worker

    monkeypatch.setenv("KEEPALIVE_TURNS", value)
    assert gunicorn_worker.keepalive_turns() is on


def test_an_unknown_keepalive_turns_value_is_refused(monkeypatch):
    from core import gunicorn_worker

    monkeypatch.setenv("KEEPALIVE_TURNS", "true")
    with pytest.raises(ValueError, match="KEEPALIVE_TURNS"):
        gunicorn_worker.keepalive_turns()


BAD_REQUESTS = {
    "header without a colon": (HEAD + b"Bad Header\r\n\r\n", 400),
    "request line too long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: api\r\n\r\n", 414),
    "too many headers": (HEAD + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", 431),
    "invalid method": (b"get\x01 / HTTP/1.1\r\n\r\n", 400),
}


@pytest.fixture(scope="module")
def api_port(tmp_path_factory) -> Iterator[int]:
    with gunicorn(tmp_path_factory.mktemp("gunicorn")) as port:
        yield port


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_errors_gunicorn_answers_itself_are_json(api_port, case):
    data, status = BAD_REQUESTS[case]
    head, _, body = _exchange(api_port, data).partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head
    error = json.loads(body)
    assert set(error) == {"error", "message"} and error["error"] and error["message"]


def test_each_instance_has_its_own_control_socket(tmp_path):
    with gunicorn(tmp_path) as first:
        first_socket = tmp_path / "run" / f"gunicorn-127.0.0.1-{first}.ctl"
        with gunicorn(tmp_path) as second:
            second_socket = tmp_path / "run" / f"gunicorn-127.0.0.1-{second}.ctl"
            wait_for(lambda: first_socket.is_socket() and second_socket.is_socket(), timeout=10)
        assert first_socket.is_socket(), "stopping one instance removed another's control socket"
