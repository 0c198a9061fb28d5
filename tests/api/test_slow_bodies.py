"""Bodies that never arrive (issue 20, item 2), under real gunicorn with its gevent worker.

The head deadline ended where the body began, and gunicorn read bodies with no timeout when the
application asked for them, by which time the request held an ``API_MAX_IN_FLIGHT`` slot: a few
hundred connections declaring ``Content-Length: 4000`` and sending a byte now and then filled the
process, and every device got ``503 overloaded``. Now the worker reads the body before the
application sees the request, within ``BODY_TIMEOUT`` (plus a second per ``BODY_MIN_RATE``
bytes), and closes the ones that miss it with a ``408``.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.api.test_load_shedding import _api, _metric
from tests.helpers import http, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.slow]

DRIPPERS = 300
DECLARED = 4000


def _dripper(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head + b"x")  # the head, then the first byte of a 4,000-byte body
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the server answered (408) or closed the connection, without blocking."""
    sock.settimeout(0.0)
    try:
        return sock.recv(4096) is not None  # b"" (closed) or the 408's bytes
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: closed too


def test_dripping_bodies_are_closed_while_devices_keep_being_served(settings, make_token, unique):
    device = f"drip-{unique}"
    token = make_token(roles=("device",), sub=f"drip-{unique}", device_id=device)
    admin = make_token(roles=("admin",), sub=f"drip-admin-{unique}")
    with _api(settings, API_MAX_IN_FLIGHT="64", BODY_TIMEOUT="2", RATE_LIMIT_EVENTS="10000/second") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        heads = [
            (f"POST /admin/login HTTP/1.1\r\nHost: api\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             f"Content-Length: {DECLARED}\r\n\r\n").encode(),
            (f"POST /events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n").encode(),
        ]  # fmt: skip
        drippers = [_dripper(port, heads[i % 2]) for i in range(DRIPPERS)]
        stop = threading.Event()

        def drip() -> None:  # a byte per connection every half second, never the whole body
            while not stop.wait(0.5):
                for sock in drippers:
                    try:
                        sock.send(b"x")
                    except OSError:
                        pass

        dripping = threading.Thread(target=drip, daemon=True)
        dripping.start()
        started = time.monotonic()
        try:
            answers: list[tuple[int, float]] = []
            event = {"device_id": device, "payload": {"n": 1}}
            while time.monotonic() - started < 5.0:  # the drippers' whole life and beyond
                for method, path, body in (("POST", "/events", event), ("GET", f"/resource/{device}", None)):
                    sent = time.monotonic()
                    status, _, _ = http(method, f"{url}{path}", token, body)
                    answers.append((status, time.monotonic() - sent))
            assert {status for status, _ in answers} <= {202, 200, 404}, answers
            assert max(seconds for _, seconds in answers) < 1.0, sorted(s for _, s in answers)[-5:]
            wait_for(lambda: all(_closed(sock) for sock in drippers), timeout=5,
                     message="every dripping connection is closed")  # fmt: skip
            assert time.monotonic() - started < 2 + 5 + 1
            assert _metric(url, admin, "http_request_body_timeouts_total") == DRIPPERS
        finally:
            stop.set()
            dripping.join()
            for sock in drippers:
                sock.close()


def test_a_body_that_arrives_in_time_is_served_and_a_stalled_one_gets_a_json_408(settings, make_token, unique):
    device = f"slow-{unique}"
    token = make_token(roles=("device",), sub=f"slow-{unique}", device_id=device)
    with _api(settings, BODY_TIMEOUT="1") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"device_id": device, "payload": {}}).encode()
        head = (
            f"POST /events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + body[:5])
            time.sleep(0.3)  # a slow but live client: the rest comes well within the deadline
            sock.sendall(body[5:])
            assert sock.recv(65536).startswith(b"HTTP/1.1 202")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + body[:5])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head_out, _, payload = answer.partition(b"\r\n\r\n")
        assert head_out.startswith(b"HTTP/1.1 408") and b"application/json" in head_out
        assert json.loads(payload)["error"] == "request_timeout"
        assert http("GET", f"{url}/healthz")[0] == 200


def test_chunked_bodies_get_the_same_deadline_and_the_same_size_limit(settings, make_token, unique):
    device = f"chunk-{unique}"
    token = make_token(roles=("device",), sub=f"chunk-{unique}", device_id=device)
    with _api(settings, BODY_TIMEOUT="1") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        head = (
            f"POST /events HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()

        def exchange(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(data)
                answer = b""
                try:
                    while chunk := sock.recv(65536):
                        answer += chunk
                except ConnectionResetError:
                    pass  # closed with part of our body unread: the kernel resets after the answer
                return answer

        body = json.dumps({"device_id": device, "payload": {}}).encode()
        assert exchange(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)).startswith(b"HTTP/1.1 202")
        assert exchange(head + b"%x\r\n%s\r\n" % (len(body), body)).startswith(b"HTTP/1.1 408")  # never ends
        big = json.dumps({"device_id": device, "payload": {"b": "x" * settings.max_body_bytes}}).encode()
        assert exchange(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)).startswith(b"HTTP/1.1 413")
