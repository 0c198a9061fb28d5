"""What every section of the benchmark shares: paths, the result rows, and the processes it starts.

``bench.run`` runs the sections (``bench/*_section.py``, ``bench/mixed.py``) and prints one table
from :data:`ROWS` and saves :data:`DETAILS`; both live here, in one module every section imports,
so they are one list and one dict however the run was started (``python -m bench.run`` makes
``bench.run`` the ``__main__`` module, a second copy if the sections imported it). Also here: the
API or a bare app under gunicorn, ``worker.py`` as deployed, a device token, and the resources a
section stores in PostgreSQL directly and removes afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import free_port, http, wait_for  # noqa: E402

BIN = ROOT / ".stack" / "bin"
PEERS_PY = ROOT / ".stack" / "bench-venv" / "bin" / "python"
PY = sys.executable
RESULTS = ROOT / "bench" / "results"
SECRET = "local-dev-secret"
# the local stack's development settings, as `make bench` exports them
for _name, _value in (("APP_ENV", "development"), ("POSTGRES_PASSWORD", "apppass"), ("JWT_SECRET", SECRET)):
    os.environ.setdefault(_name, _value)


@dataclasses.dataclass
class Row:
    figure: str
    ours: float | None
    peer: float | None = None
    peer_name: str = ""
    unit: str = ""
    goal: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.peer:
            return None
        return self.ours / self.peer


ROWS: list[Row] = []
DETAILS: dict[str, object] = {}


def say(message: str) -> None:
    print(f"bench {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes


def answers(url: str) -> bool:
    """Whether ``url`` answers below 500: the server is up (a 4xx is an answer too)."""
    try:
        return http("GET", url)[0] < 500
    except OSError:
        return False


@contextmanager
def gunicorn(
    app: str, env: dict[str, str], probe: str = "/healthz", prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The project's gunicorn settings (gunicorn.conf.py, gevent, 2 workers) serving ``app``;
    ``prefix`` goes before the command (``nice``)."""
    port = free_port()
    environ = {**os.environ, "APP_ENV": "development", "JWT_SECRET": SECRET, "WEB_CONCURRENCY": "2",
               "BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "WARNING", **env}  # fmt: skip
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    metrics = tempfile.mkdtemp(prefix="bench-metrics-")
    if app == "wsgi:app":
        environ["PROMETHEUS_MULTIPROC_DIR"] = metrics
    log = open(Path(tempfile.gettempdir()) / f"bench-gunicorn-{port}.log", "wb")  # noqa: SIM115
    command = [*prefix, str(Path(PY).parent / "gunicorn"), "-c", "gunicorn.conf.py", app]
    proc = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url + probe), timeout=30, message=f"{app} answering")
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def cpu_seconds_of_children(pid: int) -> float:
    """user+system CPU of ``pid``'s child processes (the gunicorn workers), in seconds."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def start_worker(args: list[str]) -> subprocess.Popen:
    """worker.py (tasks, 2 processes x 8 threads) as deployed: INFO, its JSON lines to a file."""
    env = {**os.environ, "LOG_LEVEL": "INFO"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = open(Path(tempfile.gettempdir()) / f"bench-worker-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([PY, "worker.py", "run", *args, "--processes", "2", "--threads", "8"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def shutil_which(name: str) -> str:
    """The path of the ``name`` binary, or exit saying it is missing."""
    import shutil

    found = shutil.which(name)
    if not found:
        raise SystemExit(f"bench: {name} not found (make bench installs it)")
    return found


def token(**claims: object) -> str:
    """A device+user token for an hour, signed with the stack's development secret."""
    import jwt

    now = int(time.time())
    return jwt.encode({"sub": "bench", "roles": ["device", "user"], "iat": now, "exp": now + 3600, **claims},
                      SECRET, algorithm="HS256")  # fmt: skip


# ------------------------------------------------------------------ resources in PostgreSQL


def db_engine() -> Engine:
    """The API's own engine (its settings and pool), for the rows a section stores or removes itself."""
    from core.settings import load_settings
    from core.wiring import build_clients

    return build_clients(load_settings(require_jwt=False)).engine


def store_resource(device: str) -> None:
    """Store ``device``'s resource as ``process_event`` would, for GETs measured with no worker running."""
    from core.resources import apply_event

    event = {"device_id": device, "payload": {"status": "online", "temp_c": 37.2},
             "received_at": dt.datetime.now(dt.UTC).isoformat(), "request_id": str(uuid.uuid4())}  # fmt: skip
    apply_event(db_engine(), event)


def forget_resource(*devices: str) -> None:
    """Delete the devices' events and resources, so a run leaves the shared database as it found it."""
    from sqlalchemy import text

    with db_engine().begin() as conn:
        conn.execute(text("DELETE FROM events WHERE device_id = ANY(:d)"), {"d": list(devices)})
        conn.execute(text("DELETE FROM resources WHERE id = ANY(:d)"), {"d": list(devices)})
