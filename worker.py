"""Worker entry point: ``python worker.py [run|lag|dlq|status|skip|scheduler] ...`` (see ``--help``).

Builds this process's clients from the environment's settings (``core.wiring``), imports the
task modules (``tasks`` by default) and hands over to :mod:`broker.cli`, passing it the
application's names: the consumer group (``KAFKA_CONSUMER_GROUP``) and where lag can be published.
"""

from __future__ import annotations

import functools
import sys
from typing import cast

from broker import Broker, KafkaBroker
from broker.brokers.kafka.admin import consumer_lag, oldest_unprocessed_age_s
from broker.cli import main
from broker.middleware import (
    AgeLimit,
    AsyncIO,
    Callbacks,
    Logging,
    Pipelines,
    Prometheus,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)
from broker.scheduler import RedisScheduleStore
from broker.telemetry import Telemetry
from core import runtime, tracing
from core.cloudwatch import publish_lag
from core.logging import configure_logging
from core.settings import Settings, SettingsError, load_settings
from core.wiring import build_clients, make_redis, telemetry_prefix


def build_broker(settings: Settings) -> Broker:
    """The production broker: Kafka with retries, time limits, JSON logs, Prometheus metrics,
    Dramatiq's defaults (async actors, max_age, callbacks, shutdown notifications) and, when
    configured, OpenTelemetry traces (:mod:`core.tracing`).

    Also hands this process's clients to the tasks (``core.runtime``)."""
    configure_logging(settings.log_level)
    middleware = [AsyncIO(), AgeLimit(), ShutdownNotifications(), Callbacks(), Logging(), Prometheus()]
    clients = build_clients(settings, middleware=[*middleware, Pipelines(), Retries(), TimeLimit()])
    broker = clients.broker
    # what the /admin console charts: counts, worker states and (one process at a time) the lag;
    # build_clients without a broker= builds the Kafka broker, whose client options the lag reads
    lag = functools.partial(sample_lag, cast(KafkaBroker, broker), settings)
    # before TimeLimit: after-hooks run in reverse, so the time limit is disarmed before Telemetry's
    # Redis write, which it could otherwise interrupt (and with it Retries' and Pipelines' hooks)
    telemetry = Telemetry(clients.redis, lag=lag, prefix=telemetry_prefix(settings))
    broker.add_middleware(telemetry, before=TimeLimit)
    # spans per message, below them the tasks' PostgreSQL and Redis spans, when OTEL_* turns tracing on
    provider = tracing.setup("device-worker")
    if provider is not None:
        tracing.trace_broker(broker, provider)
        tracing.instrument_clients(clients, provider)
    runtime.configure(clients)
    return broker


def sample_lag(broker: KafkaBroker, settings: Settings) -> dict:
    """The worker group's lag on its actors' topics, with the oldest unprocessed record's age."""
    topics = sorted(broker.get_declared_topics())
    report = consumer_lag(broker.client_options, settings.kafka_consumer_group, topics)
    report["oldest_age_s"] = oldest_unprocessed_age_s(broker.client_options, report)
    return report


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
