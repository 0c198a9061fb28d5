"""Status files: every worker process writes what it is doing to a small JSON file each second.

``worker.py status`` on the same host (inside the same container, on ECS) reads them, and they
double as pid files: ``pid``, the state (``running``, ``waiting_on_dependency``, ``draining``) and
the counts from :meth:`broker.worker.Worker.status`. A file whose process is gone, or that has not
been refreshed for ``STALE_AFTER_S``, is ignored (a SIGKILLed worker cannot remove its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from broker.message import format_timestamp, utcnow
from broker.worker import Worker

STALE_AFTER_S = 10.0


def default_dir(group_id: str) -> Path:
    """Where a group's workers on this host write their status files, unless told otherwise."""
    return Path(tempfile.gettempdir()) / f"broker-workers-{group_id}"


class StatusWriter:
    """Writes ``worker``'s status to ``directory/worker-<pid>.json`` every ``interval`` seconds."""

    def __init__(self, worker: Worker, directory: Path, interval: float = 1.0) -> None:
        self.worker = worker
        self.path = directory / f"worker-{os.getpid()}.json"
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-file", daemon=True)

    def start(self) -> StatusWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def write(self) -> None:
        status = {"pid": os.getpid(), "host": socket.gethostname(), "updated_at": format_timestamp(utcnow())}
        status["updated_epoch"] = time.time()
        status.update(self.worker.status())
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status))
        temporary.replace(self.path)  # readers never see half a file

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except OSError:  # a full or vanished disk must not stop the worker
                continue


def read(directory: Path) -> list[dict[str, Any]]:
    """The live worker processes' statuses in ``directory`` (stale and dead ones left out)."""
    statuses = []
    for path in sorted(directory.glob("worker-*.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if time.time() - status.get("updated_epoch", 0) > STALE_AFTER_S or not _alive(status.get("pid", 0)):
            continue
        statuses.append(status)
    return statuses


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
