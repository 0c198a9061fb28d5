"""A black-box probe of a running API and its console: hostile inputs, from outside, over HTTP.

    python scripts/security_probe.py http://127.0.0.1:8000 [--secret local-dev-secret]

It knows only the URL and the HS256 secret its tokens are signed with (the development one by
default: never point it at production with a real secret). Every case says what a correct API
answers; a finding is any 5xx, any answer that lets a refused request through (a bypass), or
a non-JSON error from the API. It writes nothing but events for its own device ids and console
confirmation pages (no replay or purge is ever confirmed). Exit status 1 if anything was found.

The API rate-limits refused requests per client address (``RATE_LIMIT_REFUSED``) and console
sign-ins (``ADMIN_SIGN_IN_PER_MINUTE``), and this probe is one address sending many of them: on
a ``429`` it waits ``Retry-After`` and sends the case again, so every case reaches the code it
is aimed at (a second ``429`` counts as a refusal). The last cases check that the limits bite.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HS256_HEADER = b64(b'{"alg":"HS256","typ":"JWT"}')
NONE_HEADER = b64(b'{"alg":"none"}')


def token(secret: str, **claims: Any) -> str:
    """An HS256 JWT with ``claims`` written as raw JSON (lone surrogates included)."""
    body = {"sub": "probe", "exp": int(time.time()) + 600, "iat": int(time.time()), **claims}
    body = {k: v for k, v in body.items() if v is not None}
    signing_input = f"{HS256_HEADER}.{b64(json.dumps(body).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass
class Probe:
    url: str
    secret: str
    findings: list[str] = field(default_factory=list)
    cases: int = 0
    wait_out_limits: bool = True  # on a 429, wait Retry-After and send the case again (once)
    waited: int = 0

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                opener: Any = None) -> Answer:  # fmt: skip
        answer = self._send(method, path, body, headers, opener)
        if answer.status == 429 and self.wait_out_limits:  # the limit bit: wait, so the case itself is tried
            time.sleep(min(61, int(answer.headers.get("Retry-After", "1"))))
            self.waited += 1
            answer = self._send(method, path, body, headers, opener)
        return answer

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None, opener: Any) -> Answer:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with (opener or _NO_REDIRECT).open(req, timeout=30) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers), error.read())

    def expect(self, name: str, answer: Answer, allowed: set[int], *, api_json: bool = True) -> None:
        """Record a finding unless ``answer.status`` is one of ``allowed`` (429 counts as a refusal
        wherever a 4xx is expected)."""
        self.cases += 1
        ok = set(allowed) | ({429} if all(400 <= s < 500 for s in allowed) else set())
        if answer.status >= 500:
            self.findings.append(f"{name}: {answer.status} (a 5xx)")
        elif answer.status not in ok:
            self.findings.append(f"{name}: {answer.status}, expected {sorted(allowed)} (a bypass or a wrong answer)")
        elif api_json and answer.status >= 400 and answer.status != 429 and not isinstance(answer.json(), dict):
            self.findings.append(f"{name}: {answer.status} without a JSON error body")

    def api(self, name: str, method: str, path: str, allowed: set[int], *, tok: str | None = None,
            body: Any = None, raw: bytes | None = None, content_type: str = "application/json",
            headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
        sent = dict(headers or {})
        if tok is not None:
            sent["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", content_type)
        answer = self.request(method, path, body=data, headers=sent)
        self.expect(name, answer, allowed)
        return answer


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECT = urllib.request.build_opener(_NoRedirect())


# ---------------------------------------------------------------- the API


def probe_tokens(p: Probe) -> None:
    s = p.secret
    bad = {
        "no token": None,
        "garbage": "not-a-jwt",
        "alg none": f"{NONE_HEADER}.{b64(json.dumps({'sub': 'x', 'roles': ['admin']}).encode())}.",
        "wrong key": token("another-secret-that-is-long-enough!!", roles=["admin"]),
        "expired": token(s, roles=["admin"], exp=int(time.time()) - 120),
        "no exp": token(s, roles=["admin"], exp=None),
        "lifetime over the cap": token(s, roles=["admin"], exp=int(time.time()) + 3 * 86400),
        "future nbf": token(s, roles=["admin"], nbf=int(time.time()) + 600),
        "refresh token": token(s, roles=["admin"], type="refresh"),
        "roles nested": token(s, roles=[["admin"]]),
        "roles a string": token(s, roles="admin"),
        "roles an object": token(s, roles={"admin": 1}),
        "devices a string": token(s, roles=["user"], devices="probe-a"),
        "device_id a list": token(s, roles=["device"], device_id=["probe-a"]),
        "sub too long": token(s, roles=["admin"], sub="s" * 300),
        "sub with a lone surrogate": token(s, roles=["admin"], sub="a\ud800b"),
        "sub with NUL": token(s, roles=["admin"], sub="a\u0000b"),
        "sub a number": token(s, roles=["admin"], sub=7),
        "8 KB token": "eyJhbGciOiJIUzI1NiJ9." + "A" * 8000 + ".sig",
    }
    for name, tok in bad.items():
        p.api(f"token {name}: GET", "GET", "/resource/probe-b", {401}, tok=tok)
        p.api(f"token {name}: POST", "POST", "/events", {401}, tok=tok, body={"device_id": "probe-b", "payload": {}})
        p.api(f"token {name}: /metrics", "GET", "/metrics", {401}, tok=tok)


def probe_scope(p: Probe, run: str) -> None:
    s = p.secret
    device_a = token(s, roles=["device"], sub=f"probe-dev-{run}", device_id=f"probe-a-{run}")
    p.api("device posts for its own id", "POST", "/events", {202}, tok=device_a,
          body={"device_id": f"probe-a-{run}", "payload": {"n": 1}})  # fmt: skip
    p.api("device posts for another id", "POST", "/events", {403}, tok=device_a,
          body={"device_id": f"probe-b-{run}", "payload": {}})  # fmt: skip
    p.api("device reads another id", "GET", f"/resource/probe-b-{run}", {403}, tok=device_a)
    limited_user = token(s, roles=["user"], devices=[f"probe-a-{run}"])
    p.api("limited user reads another id", "GET", f"/resource/probe-b-{run}", {403}, tok=limited_user)
    unscoped_device = token(s, roles=["device"])
    p.api("unscoped device token (allowed in development only)", "GET", f"/resource/probe-b-{run}",
          {403, 404}, tok=unscoped_device)  # fmt: skip
    user = token(s, roles=["user"])
    p.api("user posts", "POST", "/events", {403}, tok=user, body={"device_id": "x", "payload": {}})
    p.api("user reads /metrics", "GET", "/metrics", {403}, tok=user)


def probe_bodies(p: Probe) -> None:
    admin = token(p.secret, roles=["admin"], sub="probe-admin")
    j, ev = "application/json", b'{"device_id": "d", "payload": '
    cases: dict[str, tuple[bytes, str, set[int]]] = {
        "trailing newline id": (b'{"device_id": "dev-1\\n", "payload": {}}', j, {422}),
        "unicode id": ('{"device_id": "d\u00e9v", "payload": {}}'.encode(), j, {422}),
        "deep JSON": (b"[" * 30000 + b"]" * 30000, j, {400}),
        "deep payload": (ev + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}", j, {422}),
        "NaN": (ev + b'{"t": NaN}}', j, {422}),
        "lone surrogate": (ev + b'{"s": "\\udc00"}}', j, {422}),
        "NUL": (ev + b'{"s": "\\u0000"}}', j, {422}),
        "invalid UTF-8": (ev + b'{"s": "\xff\xfe"}}', j, {400}),
        "array": (b"[1]", j, {422}),
        "unknown field": (b'{"device_id": "d", "payload": {}, "x": 1}', j, {422}),
        "text/plain": (ev + b"{}}", "text/plain", {415}),
        "over MAX_BODY_BYTES": (ev + b'{"b": "' + b"x" * 70000 + b'"}}', j, {413}),
        "10k keys": (ev + b"{" + b",".join(b'"k%d": 0' % i for i in range(10000)) + b"}}", j, {413, 422}),
    }
    for name, (raw, content_type, allowed) in cases.items():
        p.api(f"body {name}", "POST", "/events", allowed, tok=admin, raw=raw, content_type=content_type)
    for name, key in {"non-ASCII": "k\u00e9", "too long": "k" * 200, "semicolon": "a;b"}.items():
        answer = p.request("POST", "/events", body=b'{"device_id": "probe-k", "payload": {}}',
                           headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json",
                                    "Idempotency-Key": key.encode("utf-8").decode("latin-1")})  # fmt: skip
        p.expect(f"Idempotency-Key {name}", answer, {400})
    for name, path in {
        "newline": "/resource/dev-1%0A",
        "emoji": "/resource/%F0%9F%98%80",
        "too long": "/resource/" + "a" * 200,
        "NUL": "/resource/a%00b",
        "traversal": "/resource/..%2F..%2Fetc%2Fpasswd",
    }.items():
        p.api(f"id {name}", "GET", path, {400, 404}, tok=admin)
    p.api("PUT /events", "PUT", "/events", {405}, tok=admin)
    p.api("unknown route", "GET", "/nope", {404})


def probe_gunicorn_level(p: Probe) -> None:
    """Malformed requests and a body that never arrives, on raw sockets."""
    host, port = urllib.parse.urlsplit(p.url).hostname, urllib.parse.urlsplit(p.url).port or 80
    raw = {
        "bad header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        "huge request line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad chunk size": b"POST /events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "CL and TE": b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    }  # fmt: skip
    for name, data in raw.items():
        status = _raw_status(host, port, data)
        p.cases += 1
        if status is not None and status >= 500:
            p.findings.append(f"raw {name}: {status} (a 5xx)")
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 4000\r\n\r\nx")  # fmt: skip
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except OSError:
            pass
    waited = time.monotonic() - started
    p.cases += 1
    if not answer.startswith(b"HTTP/1.1 408") or waited > 20:
        p.findings.append(f"a stalled body: {answer[:20]!r} after {waited:.1f}s (expected 408 within BODY_TIMEOUT)")


def _raw_status(host: str | None, port: int, data: bytes) -> int | None:
    try:
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(data)
            head = conn.recv(65536)
    except OSError:
        return None  # reset: refused without an answer, which is fine
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else None


def probe_readyz(p: Probe) -> None:
    statuses = {p.request("GET", "/readyz").status for _ in range(200)}
    p.cases += 1
    if statuses - {200, 503} or 500 in statuses:
        p.findings.append(f"/readyz flood: {sorted(statuses)}")


# ---------------------------------------------------------------- the console


class Browser:
    """A cookie-keeping client of the console (no redirects followed)."""

    def __init__(self, p: Probe) -> None:
        self.p = p
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def get(self, path: str) -> Answer:
        return self.p.request("GET", path, opener=self.opener)

    def post(self, path: str, form: dict[str, Any]) -> Answer:
        body = urllib.parse.urlencode(form, doseq=True).encode()
        return self.p.request("POST", path, body=body, opener=self.opener,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip

    def csrf(self, path: str) -> str:
        match = re.search(rb'name="csrf" value="([^"]+)"', self.get(path).body)
        return match.group(1).decode() if match else ""

    def sign_in(self, tok: str) -> Answer:
        return self.post("/admin/login", {"csrf": self.csrf("/admin/login"), "token": tok})


def probe_console(p: Probe, run: str) -> None:
    s = p.secret
    first, second = Browser(p), Browser(p)
    p.expect("console without a session", first.get("/admin/"), {302}, api_json=False)
    admin = token(s, roles=["admin"], sub=f"probe-ops-{run}")
    p.expect("admin signs in", first.sign_in(admin), {302}, api_json=False)
    p.expect("signed in: overview", first.get("/admin/"), {200}, api_json=False)
    p.expect("the same admin signs in elsewhere", second.sign_in(admin), {302}, api_json=False)
    p.expect("the first session has ended", first.get("/admin/"), {302}, api_json=False)
    csrf = second.csrf("/admin/dead-letters")
    for name, value in {"superscript": "\u00b2:1", "5,000 digits": "1:" + "9" * 5000, "negative": "-1:0",
                        "partition overflow": "99999999999:0", "junk": "a:b"}.items():  # fmt: skip
        answer = second.post(
            "/admin/dead-letters/action", {"csrf": csrf, "action": "replay-selected", "selected": value}
        )
        p.expect(f"console position {name}", answer, {400}, api_json=False)
    many = {"csrf": csrf, "action": "replay-selected", "selected": [f"0:{i}" for i in range(600)]}
    p.expect("console 600 positions", second.post("/admin/dead-letters/action", many), {400}, api_json=False)
    confirm = second.post(
        "/admin/dead-letters/action", {"csrf": csrf, "action": "replay-selected", "selected": "0:999999999"}
    )
    p.expect("console confirmation of a missing letter", confirm, {200}, api_json=False)
    letters = "/admin/dead-letters"
    odd_pages = {
        "huge offset": f"{letters}/0/" + "9" * 40,
        "huge partition": f"{letters}/" + "9" * 20 + "/0",
        "since nan": f"{letters}?since_hours=nan",
        "since 1e400": f"{letters}?since_hours=1e400",
        "page 3,000 digits": f"{letters}?page=" + "9" * 3000,  # 5,000 would be gunicorn's 414
        "page superscript": f"{letters}?page=%C2%B2",
        "actor junk": f"{letters}?actor=" + urllib.parse.quote("\u00e9\ud7ff<script>"),
    }
    for name, path in odd_pages.items():
        p.expect(f"console {name}", second.get(path), {200, 404}, api_json=False)
    for name, csrf_value in {"missing": None, "wrong": "x", "non-ASCII": "\u00e9t\u00e9"}.items():
        form = {"action": "purge", "confirm": "yes", **({"csrf": csrf_value} if csrf_value is not None else {})}
        p.expect(f"console CSRF {name}", second.post("/admin/dead-letters/action", form), {403}, api_json=False)
    stranger = Browser(p)
    refused = {
        "refresh token": token(s, roles=["admin"], type="refresh"),
        "nested roles": token(s, roles=[["admin"]]),
        "roles a string": token(s, roles="admin"),
        "not an admin": token(s, roles=["user"]),
        "expired inside the leeway": token(s, roles=["admin"], exp=int(time.time()) - 5),
        "garbage": "garbage",
    }
    for name, tok in refused.items():
        answer = stranger.sign_in(tok)
        p.expect(f"console sign-in: {name}", answer, {401, 403}, api_json=False)
        if any(c.name == "admin_session" for c in stranger.jar):
            p.findings.append(f"console sign-in: {name}: a session cookie was set")
    big = stranger.post("/admin/login", {"csrf": stranger.csrf("/admin/login"), "token": "x" * 20000})
    p.expect("console sign-in form of 20 KB", big, {413})
    non_ascii = stranger.post("/admin/login", {"csrf": "\u00e9", "token": "x"})
    p.expect("console sign-in non-ASCII CSRF", non_ascii, {403}, api_json=False)


def probe_limits(p: Probe) -> None:
    """Last: a flood of refused requests and of sign-ins must meet 429s."""
    p.wait_out_limits = False
    statuses = [p.request("GET", "/resource/x", headers={"Authorization": "Bearer junk"}).status for _ in range(80)]
    p.cases += 1
    if 429 not in statuses or set(statuses) - {401, 429}:
        p.findings.append(f"80 refused requests from one address: {sorted(set(statuses))} (expected 401 then 429)")
    browser = Browser(p)
    statuses = [browser.sign_in("junk").status for _ in range(15)]
    p.cases += 1
    if 429 not in statuses or any(s >= 500 for s in statuses):
        p.findings.append(f"15 sign-ins from one address: {sorted(set(statuses))} (expected 401 then 429)")


PHASES: list[tuple[str, Callable[..., None]]] = [
    ("tokens", probe_tokens), ("device scope", probe_scope), ("bodies and ids", probe_bodies),
    ("below the application", probe_gunicorn_level), ("/readyz", probe_readyz), ("console", probe_console),
    ("limits", probe_limits),
]  # fmt: skip


def run(url: str, secret: str) -> Probe:
    probe = Probe(url.rstrip("/"), secret)
    tag = uuid.uuid4().hex[:8]
    for name, phase in PHASES:
        before = len(probe.findings)
        started = time.monotonic()
        phase(probe, tag) if phase in (probe_scope, probe_console) else phase(probe)
        print(f"{name:24} {len(probe.findings) - before} finding(s), {time.monotonic() - started:.1f} s", flush=True)
    return probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--secret", default="local-dev-secret", help="the HS256 secret the API verifies with")
    args = parser.parse_args(argv)
    probe = run(args.url, args.secret)
    for finding in probe.findings:
        print("FINDING", finding)
    print(f"{probe.cases} cases, {len(probe.findings)} finding(s); waited out a rate limit {probe.waited} time(s)")
    return 1 if probe.findings else 0


if __name__ == "__main__":
    sys.exit(main())
