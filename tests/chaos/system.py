"""The chaos suite's system under test: the API under gunicorn (2 gevent workers) and ``worker.py``
with several processes, started, killed and stopped as separate real processes, on the local
stack (``scripts/stack``), and the small tools every scenario uses on them (a token, a GET, the
process tree, a deadline wait). Apart from the load and the verdict (:mod:`tests.chaos.load`,
:mod:`tests.chaos.harness`), as a scenario that only kills or restarts needs just this.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import jwt
import jwt.warnings

from core.settings import Settings
from tests.helpers import free_port, start_group_at_end

ROOT = Path(__file__).resolve().parents[2]
INPUT_TOPIC = "events-input"
# imported only by a run that wants it: importing declares its actor on whatever broker is set
ASYNC_MODULE = "tests.chaos.async_actors"
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)  # the development secret


def log(message: str) -> None:
    """One timestamped line on stderr (stdout carries the results)."""
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
        if not wait_until(lambda: http_get(self.url, "/healthz")[0] == 200, timeout=60):
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
    """A token for two hours, signed with the development secret the system runs with."""
    claims = {"sub": "chaos", "roles": list(roles), "exp": dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)}
    return jwt.encode(claims, "local-dev-secret", algorithm="HS256")


def http_get(url: str, path: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """``GET path`` on a fresh connection: status and body (a connection error raises ``OSError``)."""
    conn = http.client.HTTPConnection(url, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
