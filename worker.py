"""Worker entry point: ``python worker.py [run|lag|dlq|status|skip|scheduler] ...`` (see ``--help``).

Builds this process's clients from the environment's settings (``core.wiring``), imports the
task modules (``tasks`` by default) and hands over to :mod:`broker.cli`, passing it the
application's names: the consumer group (``KAFKA_CONSUMER_GROUP``) and where lag can be published.
"""

from __future__ import annotations

import functools
import sys

from broker import Broker
from broker.cli import main
from broker.middleware import Logging, Pipelines, Prometheus, Retries, TimeLimit
from broker.scheduler import RedisScheduleStore
from core import runtime
from core.cloudwatch import publish_lag
from core.logging import configure_logging
from core.settings import Settings, SettingsError, load_settings
from core.wiring import build_clients, make_redis


def build_broker(settings: Settings) -> Broker:
    """The production broker: Kafka with retries, time limits, JSON logs and Prometheus metrics.

    Also hands this process's clients to the tasks (``core.runtime``)."""
    configure_logging(settings.log_level)
    clients = build_clients(settings, middleware=[Logging(), Prometheus(), Pipelines(), Retries(), TimeLimit()])
    runtime.configure(clients)
    return clients.broker


def run(settings: Settings, argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: the process's arguments) with the application's names."""
    return main(
        functools.partial(build_broker, settings),
        argv,
        default_modules=["tasks"],
        default_group=settings.kafka_consumer_group,
        lag_publishers={"cloudwatch": functools.partial(publish_lag, namespace=settings.cloudwatch_namespace)},
        schedule_store=lambda: RedisScheduleStore(client=make_redis(settings)),
    )


if __name__ == "__main__":
    try:
        settings = load_settings(require_jwt=False)
    except SettingsError as exc:
        sys.exit(str(exc))
    sys.exit(run(settings))
