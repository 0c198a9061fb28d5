"""core.gunicorn_response: a response's head and its first body chunk go out in one send, and
every response gunicorn frames otherwise (no body, HEAD, chunked) is still complete and correct."""

from __future__ import annotations

import io

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from core.gunicorn_response import CoalescingResponse


class RecordingSocket:
    """A client socket: the request's bytes to read, every ``sendall`` recorded."""

    def __init__(self, request: bytes) -> None:
        self._in = io.BytesIO(request)
        self.sends: list[bytes] = []

    def recv(self, size: int) -> bytes:
        return self._in.read(size)

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def respond(method: str, status: str, headers: list[tuple[str, str]], chunks: list[bytes], version: str = "1.1"):
    sock = RecordingSocket(f"{method} /x HTTP/{version}\r\nHost: api\r\n\r\n".encode())
    cfg = Config()
    req = next(iter(RequestParser(cfg, sock, ("127.0.0.1", 1))))
    response = CoalescingResponse(req, sock, cfg)
    response.start_response(status, headers)
    for chunk in chunks:
        response.write(chunk)
    response.close()
    return sock.sends


def test_head_and_body_leave_in_one_send():
    body = b'{"status":"accepted"}'
    sends = respond("POST", "202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                    [body])  # fmt: skip
    assert len(sends) == 1
    head, _, rest = sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n") and b"Content-Length: 21" in head
    assert rest == body


def test_later_chunks_follow_in_their_own_sends():
    sends = respond("GET", "200 OK", [("Content-Length", "6")], [b"abc", b"def"])
    assert len(sends) == 2 and sends[0].endswith(b"\r\n\r\nabc") and sends[1] == b"def"


@pytest.mark.parametrize(
    ("method", "status", "chunks"),
    [("HEAD", "200 OK", [b"dropped"]), ("GET", "204 No Content", []), ("GET", "200 OK", [b""])],
)
def test_a_response_without_body_bytes_still_sends_its_head(method, status, chunks):
    sends = respond(method, status, [("Content-Length", "0")] if status != "204 No Content" else [], chunks)
    assert b"".join(sends).startswith(f"HTTP/1.1 {status}\r\n".encode())
    assert b"".join(sends).endswith(b"\r\n\r\n")
    assert b"dropped" not in b"".join(sends)


def test_a_chunked_body_is_framed_as_gunicorn_frames_it():
    sends = respond("GET", "200 OK", [], [b"abc"])  # no Content-Length on HTTP/1.1: chunked
    data = b"".join(sends)
    assert b"Transfer-Encoding: chunked" in data
    assert data.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
