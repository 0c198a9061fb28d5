"""The operator commands of ``worker.py``: lag, dead letters, status and skip.

Each prints JSON on stdout (log lines go to stderr) and returns the process's exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from broker import status
from broker.broker import Broker, set_broker

BrokerFactory = Callable[[], Broker]
LagPublisher = Callable[[dict[str, Any]], int]
"""Sends one lag report somewhere (a metrics service); returns how many data points it sent."""


def quiet(broker_factory: BrokerFactory) -> BrokerFactory:
    def build() -> Broker:
        broker = broker_factory()
        logs_to_stderr()
        return broker

    return build


def logs_to_stderr() -> None:
    """Operator commands print JSON on stdout; keep log lines (JSON too) off it."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def import_actors(broker_factory: BrokerFactory, modules: Sequence[str]) -> Broker:
    broker = broker_factory()
    set_broker(broker)
    for module in modules:
        importlib.import_module(module)
    return broker


def print_lag(broker_factory: BrokerFactory, args: argparse.Namespace, publishers: Mapping[str, LagPublisher]) -> int:
    from broker.brokers.kafka.admin import consumer_lag, oldest_unprocessed_age_s, topic_size
    from broker.errors import BrokerError

    broker = import_actors(broker_factory, args.modules)
    topics = args.topics or sorted(broker.get_declared_topics())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    options = client_options(broker)
    while True:
        report = consumer_lag(options, args.group, topics)
        try:  # for the alarms: how old the backlog is, and how many dead letters there are
            report["oldest_age_s"] = round(oldest_unprocessed_age_s(options, report), 1)
            report["dead_letters"] = {broker.dead_letter_topic: topic_size(options, broker.dead_letter_topic)}
        except BrokerError as exc:
            report["extra_error"] = str(exc)
        if args.publish:
            report["published"] = publishers[args.publish](report)
        print(json.dumps(report, indent=None if args.interval else 2), flush=True)
        if not args.interval or stop.wait(args.interval):
            return 0


def dead_letters(broker_factory: BrokerFactory, args: argparse.Namespace) -> int:
    from broker.brokers.kafka.admin import read_dead_letters, replay_dead_letters
    from broker.dead_letters import describe_dead_letter

    broker = broker_factory()
    options = client_options(broker)
    if args.dlq_command == "list":
        for count, record in enumerate(read_dead_letters(options, broker.dead_letter_topic), start=1):
            print(json.dumps(describe_dead_letter(record, show_body=args.show_body)))
            if args.limit and count >= args.limit:
                break
        return 0
    replayed = replay_dead_letters(
        options,
        broker.dead_letter_topic,
        group_id=args.group or f"{broker.dead_letter_topic}-replay",
        actor=args.actor,
        limit=args.limit,
    )
    print(json.dumps({"replayed": len(replayed), "messages": replayed}, indent=2))
    return 0


def client_options(broker: Broker) -> dict[str, Any]:
    options: dict[str, Any] | None = getattr(broker, "client_options", None)
    if options is None:
        raise SystemExit("operator commands need a Kafka broker")
    return options


def show_status(broker_factory: BrokerFactory, args: argparse.Namespace) -> int:
    """The group as Kafka sees it (members, hosts, partitions) and this host's worker processes."""
    from broker.brokers.kafka.admin import describe_group

    broker = broker_factory()
    report = describe_group(client_options(broker), args.group)
    directory = Path(args.status_dir) if args.status_dir else status.default_dir(args.group)
    report["processes_here"] = status.read(directory)
    print(json.dumps(report, indent=2))
    return 0


def skip(broker_factory: BrokerFactory, args: argparse.Namespace) -> int:
    """Dead-letter one record and move the group past it (see ``broker.brokers.kafka.admin.skip_record``)."""
    from broker.brokers.kafka.admin import SkipRefused, skip_record

    broker = broker_factory()
    try:
        done = skip_record(
            client_options(broker),
            dlq_topic=broker.dead_letter_topic,
            group_id=args.group,
            topic=args.topic,
            partition=args.partition,
            offset=args.offset,
            force=args.force,
        )
    except SkipRefused as exc:
        print(f"worker.py skip: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(done, indent=2))
    return 0
