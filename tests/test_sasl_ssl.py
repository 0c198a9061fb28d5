"""Confluent Cloud's protocol for real: the local stack's SASL_SSL/PLAIN listener with its own CA,
reached through exactly the settings path production uses (environment -> Settings -> broker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker import KafkaBroker, Worker, actor
from core.settings import load_settings
from tests.helpers import wait_for

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = Path(os.environ.get("STACK_DIR", ROOT / ".stack"))


@pytest.fixture
def sasl_environ() -> dict[str, str]:
    """What an operator sets for Confluent Cloud, pointed at the local SASL_SSL listener."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{os.environ.get('KAFKA_SASL_PORT', '9094')}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": os.environ.get("KAFKA_LOCAL_SASL_USERNAME", "app"),
        "KAFKA_SASL_PASSWORD": os.environ.get("KAFKA_LOCAL_SASL_PASSWORD", "app-secret"),
        "KAFKA_SSL_CAFILE": str(STACK_DIR / "kafka" / "tls" / "ca.pem"),
    }


def test_tasks_are_sent_and_processed_over_sasl_ssl(sasl_environ, make_topic, unique):
    topic = make_topic(partitions=2)  # created over the plaintext listener, used over SASL_SSL
    settings = load_settings({"POSTGRES_PASSWORD": "x", **sasl_environ}, require_jwt=False)
    assert settings.kafka_options["security_protocol"] == "SASL_SSL"
    broker = KafkaBroker(**settings.kafka_options, dead_letter_topic=topic)
    seen = []

    @actor(broker=broker, topic=topic)
    def secure(n):
        seen.append(n)

    worker = Worker(broker, group_id=f"sasl-{unique}", worker_threads=2, forward_delays=False)
    worker.start()
    try:
        secure.send_many((n,) for n in range(20))
        wait_for(lambda: sorted(seen) == list(range(20)), timeout=60, message=str(seen))
    finally:
        worker.stop()
        broker.close()


def test_operator_commands_use_the_same_settings_path(sasl_environ, make_topic, unique):
    topic = make_topic(partitions=2)
    out = subprocess.run(
        [sys.executable, "worker.py", "lag", "--group", f"sasl-{unique}", "--topics", topic],
        cwd=ROOT, env={**os.environ, "POSTGRES_PASSWORD": "x", **sasl_environ},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert '"total_lag": 0' in out.stdout


def test_a_wrong_password_stops_the_worker_at_start_up_with_a_clear_message(sasl_environ):
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "worker.py", "run"],
        cwd=ROOT, env={**os.environ, "POSTGRES_PASSWORD": "x", **sasl_environ, "KAFKA_SASL_PASSWORD": "wrong"},
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1
    assert time.monotonic() - began < 45
    assert "cannot start" in result.stderr and "rejected the SASL credentials for user 'app'" in result.stderr
    assert "wrong" not in result.stderr  # the password itself is never printed
