"""Small test helpers: waiting on conditions with a deadline (never a bare sleep)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, interval: float | None = None, message: str = "") -> T:
    """Return the first truthy value of ``condition()``, or fail the test after ``timeout`` seconds.

    Checks come every ``interval`` seconds when one is given (a costly check: a page load, a
    subprocess); otherwise quickly at first, 5 ms doubling up to 50 ms: most conditions hold within
    milliseconds on the stub, and a fixed 50 ms step cost each such wait 25 ms on average."""
    deadline = time.monotonic() + timeout
    pause = interval if interval is not None else 0.005
    longest = interval if interval is not None else 0.05
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or condition}")
        time.sleep(pause)
        pause = min(pause * 2, longest)


ROOT = Path(__file__).resolve().parents[1]


def git_status() -> set[str] | None:
    """``git status --porcelain`` lines of the checkout (None outside a git work tree)."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True
    )
    return set(result.stdout.splitlines()) if result.returncode == 0 else None


def free_port() -> int:
    """A TCP port nothing listens on right now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_group_at_end(kafka_options: dict, group: str, topic: str) -> None:
    """Commit the topic's end offsets for a new group, so its worker sees only what comes next.

    ``kafka_options`` are ``Settings.kafka_options``."""
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KTP

    from broker.brokers.kafka import client_options

    consumer = KafkaConsumer(**client_options(**kafka_options), group_id=group, enable_auto_commit=False)
    tps = [KTP(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(tps)
    consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in ends.items()})
    consumer.close()


def position(consumer: Any, tp: Any) -> int:
    """A ``KafkaConsumer``'s fetch position on an assigned ``tp`` (kafka-python answers None when it
    could not learn it: the test fails there, not in a comparison)."""
    offset: int | None = consumer.position(tp)
    assert offset is not None, f"no fetch position for {tp}"
    return offset


def http(method: str, url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict, bytes]:
    """One request with urllib: (status, headers, body), an HTTP error's status included; raises
    ``OSError`` when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def stop_processes(procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGTERM every process still running (a worker drains; a supervisor forwards it to its
    children), wait for each, and SIGKILL whatever has not exited within ``timeout`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_environ(settings: Any, **extra: str) -> dict[str, str]:
    """The environment for a ``worker.py`` a test starts: this stack's addresses and password,
    INFO logs, plus ``extra`` (topics, groups and the like)."""
    return {**os.environ, "POSTGRES_PASSWORD": settings.postgres_password, "REDIS_URL": settings.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers, "LOG_LEVEL": "INFO", **extra}  # fmt: skip
