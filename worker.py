"""Worker entry point: ``python worker.py [run|lag|dlq] ...`` (see ``python worker.py run --help``).

Builds the Kafka broker from the environment's settings in each process, imports the task
modules (``tasks`` by default) and hands over to :mod:`broker.cli`.
"""

from __future__ import annotations

import sys

from broker import Broker, KafkaBroker
from broker.cli import main
from broker.middleware import Logging, Prometheus, Retries, TimeLimit
from core import runtime
from core.logging import configure_logging
from core.settings import SettingsError, load_settings


def build_broker() -> Broker:
    """The production broker: Kafka with retries, time limits, JSON logs and Prometheus metrics."""
    settings = load_settings(require_jwt=False)
    configure_logging(settings.log_level)
    runtime.configure(settings)
    return KafkaBroker(
        **settings.kafka_options,
        dead_letter_topic=settings.kafka_topic_dlq,
        send_timeout_ms=settings.kafka_send_timeout_ms,
        middleware=[Logging(), Prometheus(), Retries(), TimeLimit()],
    )


if __name__ == "__main__":
    try:
        sys.exit(main(build_broker, default_modules=["tasks"]))
    except SettingsError as exc:
        sys.exit(str(exc))
