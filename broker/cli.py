"""Command line for workers and operators, given a function that builds the broker.

    run  [--processes N | --autoscale MIN,MAX] [--threads M] [--topics T ...] [--group G]
         [--instance-id ID] [--metrics-port P] [modules ...]
    lag  [--group G] [--topics T ...] [--publish NAME] [--interval S]
                                                        per-partition and total lag, as JSON
    dlq list   [--limit N]                              dead letters as JSON lines (no arguments)
    dlq replay [--actor A] [--limit N]                  re-send dead letters to their topics
    status [--group G]                                  the group's members and this host's workers
    skip --topic T --partition P --offset O [--force]   dead-letter one record, move the group past it
    scheduler [--grace S] [modules ...]                 enqueue the periodic actors' runs (broker.scheduler)

The operator commands live in :mod:`broker.commands`.

With ``--processes N > 1`` the parent starts N child processes (each builds its own broker and
consumer, as Kafka clients must not cross ``fork``), forwards SIGTERM/SIGINT to them and exits
when they have. One signal drains (finish running messages, commit, leave the group); a second
exits at once without committing unfinished work.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from broker import commands, status
from broker.commands import BrokerFactory, LagPublisher
from broker.errors import BrokerError
from broker.scheduler import DEFAULT_GRACE_MS, Scheduler, ScheduleStore
from broker.transient import DEFAULT_MAX_BACKOFF_MS
from broker.worker import DEFAULT_GROUP, Worker

log = logging.getLogger(__name__)


def make_parser(
    default_modules: Sequence[str], default_group: str = DEFAULT_GROUP, publishers: Sequence[str] = ()
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worker.py", description="Run actors from Kafka, or inspect the group.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="consume and run actors (the default command)")
    run.add_argument("modules", nargs="*", default=list(default_modules), help="modules that declare actors")
    run.add_argument("--processes", "-p", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--threads", "-t", type=int, default=8, help="worker threads per process (default 8)")
    run.add_argument("--topics", nargs="+", help="topics to consume (default: the actors' topics)")
    run.add_argument("--group", default=default_group, help=f"consumer group (default {default_group})")
    run.add_argument("--shutdown-timeout", type=int, default=30000, help="ms to finish running messages on stop")
    run.add_argument(
        "--instance-id",
        help="a stable member identity (Kafka static membership): a process restarted with the same id "
        "within the session timeout takes its partitions back without a rebalance. {host} is this host's "
        "name, {index} the process's index; with --processes N, '-{index}' is appended unless given",
    )
    run.add_argument(
        "--autoscale",
        metavar="MIN,MAX",
        help="run between MIN and MAX processes, by the group's lag per process (instead of --processes)",
    )
    run.add_argument(
        "--autoscale-target",
        type=int,
        default=5000,
        help="lag per process to keep under (default 5000, as the ECS policy per task)",
    )
    run.add_argument("--autoscale-interval", type=float, default=15.0, help="seconds between decisions (default 15)")
    run.add_argument(
        "--scale-out-cooldown", type=float, default=30.0, help="seconds after adding before adding more (default 30)"
    )
    run.add_argument(
        "--scale-in-cooldown",
        type=float,
        default=120.0,
        help="seconds the lag must stay low, and since the last change, before removing one (default 120)",
    )
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.add_argument("--status-dir", help="where each process writes its status file (default: a temp folder)")
    run.add_argument(
        "--dependency-backoff-max",
        type=int,
        default=DEFAULT_MAX_BACKOFF_MS,
        help=f"ms: the longest wait between tries while a dependency is down (default {DEFAULT_MAX_BACKOFF_MS})",
    )

    lag = sub.add_parser("lag", help="print the group's lag as JSON")
    lag.add_argument("modules", nargs="*", default=list(default_modules))
    lag.add_argument("--group", default=default_group)
    lag.add_argument("--topics", nargs="+", help="default: the actors' topics")
    lag.add_argument("--publish", choices=sorted(publishers), help="also send it to this metrics service")
    lag.add_argument("--interval", type=float, help="repeat every N seconds (until SIGTERM)")

    dlq = sub.add_parser("dlq", help="inspect or replay dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="print dead letters as JSON lines")
    dlq_list.add_argument("--limit", type=int)
    dlq_list.add_argument("--show-body", action="store_true", help="also print each message (its arguments: payloads)")
    replay = dlq_sub.add_parser("replay", help="re-send dead letters to their original topics")
    replay.add_argument("--actor", help="only this actor's dead letters")
    replay.add_argument("--limit", type=int, help="at most this many")
    replay.add_argument("--group", help="tracks what was replayed (default: the dead-letter topic + '-replay')")

    status = sub.add_parser("status", help="the group's members and this host's worker processes, as JSON")
    status.add_argument("--group", default=default_group)
    status.add_argument("--status-dir", help="where the workers write their status files")

    skip = sub.add_parser("skip", help="dead-letter one record and move the group past it")
    skip.add_argument("--topic", required=True)
    skip.add_argument("--partition", type=int, required=True)
    skip.add_argument("--offset", type=int, required=True)
    skip.add_argument("--group", default=default_group)
    skip.add_argument("--force", action="store_true", help="even while the group has live members")

    scheduler = sub.add_parser("scheduler", help="enqueue the periodic actors' runs (run any number of them)")
    scheduler.add_argument("modules", nargs="*", default=list(default_modules))
    scheduler.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_MS / 1000,
        help=f"seconds: a run later than this is skipped (default {DEFAULT_GRACE_MS // 1000})",
    )
    return parser


def main(
    broker_factory: BrokerFactory,
    argv: Sequence[str] | None = None,
    *,
    default_modules: Sequence[str] = (),
    default_group: str = DEFAULT_GROUP,
    lag_publishers: Mapping[str, LagPublisher] | None = None,
    schedule_store: Callable[[], ScheduleStore] | None = None,
) -> int:
    """Run one command. The application supplies its names: the modules declaring its actors, its
    consumer group, the services ``lag --publish NAME`` can send lag to, and the store schedulers
    share (``schedule_store``, needed by ``scheduler``)."""
    lag_publishers = dict(lag_publishers or {})
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "lag", "dlq", "status", "skip", "scheduler", "-h", "--help"):
        argv.insert(0, "run")
    args = make_parser(default_modules, default_group, list(lag_publishers)).parse_args(argv)
    if args.command == "run":
        if args.autoscale:
            return autoscale(broker_factory, args)
        if args.processes > 1:
            return supervise(args)
        return run_worker(broker_factory, args)
    if args.command == "scheduler":
        return run_scheduler(broker_factory, args, schedule_store)
    build = commands.quiet(broker_factory)
    if args.command == "lag":
        return commands.print_lag(build, args, lag_publishers)
    if args.command == "status":
        return commands.show_status(build, args)
    if args.command == "skip":
        return commands.skip(build, args)
    return commands.dead_letters(build, args)


def run_worker(broker_factory: BrokerFactory, args: argparse.Namespace) -> int:
    """One worker process: consume until SIGTERM/SIGINT, then drain. Exit 1 if the consumer failed."""
    broker = commands.import_actors(broker_factory, args.modules)
    broker.emit_after("process_boot")  # Dramatiq's hook: this process has its broker and actors
    if args.metrics_port:
        _serve_metrics(args.metrics_port)
    worker = Worker(
        broker,
        topics=args.topics,
        group_id=args.group,
        worker_threads=args.threads,
        shutdown_timeout_ms=args.shutdown_timeout,
        dependency_max_backoff_ms=args.dependency_backoff_max,
        instance_id=instance_id(args.instance_id, 0) if args.instance_id else None,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now without committing unfinished work")
            os._exit(2)
        log.info("signal %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.start()
    except BrokerError as exc:
        log.error("worker cannot start", extra={"error": str(exc)})
        print(f"worker.py: cannot start: {exc}", file=sys.stderr)
        return 1
    directory = Path(args.status_dir) if args.status_dir else status.default_dir(args.group)
    status_file = status.StatusWriter(worker, directory).start()
    while not stop.wait(0.5):
        if worker.wait(0):
            break  # the consumer thread died
    worker.stop()
    status_file.stop()
    broker.close()
    return 1 if worker.failure else 0


def run_scheduler(
    broker_factory: BrokerFactory, args: argparse.Namespace, store_factory: Callable[[], ScheduleStore] | None
) -> int:
    """One scheduler process: tick until SIGTERM/SIGINT."""
    if store_factory is None:
        print("worker.py: this application gives the scheduler no shared store", file=sys.stderr)
        return 2
    broker = commands.import_actors(broker_factory, args.modules)
    scheduler = Scheduler(broker, store_factory(), grace_ms=int(args.grace * 1000))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    scheduler.run(stop)
    broker.close()
    return 0


def child_command(args: argparse.Namespace) -> list[str]:
    """The command line of one single-process worker with the same options as ``args`` (no identity)."""
    command = [
        sys.executable,
        sys.argv[0],
        "run",
        *args.modules,
        "--processes",
        "1",
        "--threads",
        str(args.threads),
        "--group",
        args.group,
        "--shutdown-timeout",
        str(args.shutdown_timeout),
        "--dependency-backoff-max",
        str(args.dependency_backoff_max),
    ]
    if args.status_dir:
        command += ["--status-dir", args.status_dir]
    if args.topics:
        command += ["--topics", *args.topics]
    return command


def identity_template(args: argparse.Namespace) -> str | None:
    """``--instance-id`` for children, with ``{index}`` in it so that each one's is its own."""
    template: str | None = args.instance_id
    if template and "{index}" not in template:
        template += "-{index}"
    return template


def spawn_child(command: list[str], template: str | None, index: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start child ``index``. Its own session: a terminal's Ctrl-C reaches only the parent, which
    forwards one signal; and if the parent dies without forwarding (SIGKILL, OOM), the children
    drain and exit."""
    identity = ["--instance-id", instance_id(template, index)] if template else []
    return subprocess.Popen(command + identity, env=env, start_new_session=True, preexec_fn=_terminate_with_parent)


def _children_environment(args: argparse.Namespace) -> dict[str, str]:
    """The children's environment; with ``--metrics-port``, this parent serves their metrics."""
    env = dict(os.environ)
    if args.metrics_port:
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="worker-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"]
        _serve_metrics(args.metrics_port, multiprocess=True)
    return env


def supervise(args: argparse.Namespace) -> int:
    """Start ``args.processes`` single-process workers and relay signals to them."""
    command, template, env = child_command(args), identity_template(args), _children_environment(args)
    children = [spawn_child(command, template, index, env) for index in range(args.processes)]

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def autoscale(broker_factory: BrokerFactory, args: argparse.Namespace) -> int:
    """``run --autoscale MIN,MAX``: as many single-process workers as the group's lag asks for."""
    from broker.autoscale import AutoscalePolicy, parse_range
    from broker.supervisor import Autoscaler

    try:
        low, high = parse_range(args.autoscale)
        policy = AutoscalePolicy(
            low,
            high,
            target_lag=args.autoscale_target,
            scale_out_cooldown_s=args.scale_out_cooldown,
            scale_in_cooldown_s=args.scale_in_cooldown,
        )
    except ValueError as exc:
        print(f"worker.py: {exc}", file=sys.stderr)
        return 2
    broker = commands.import_actors(broker_factory, args.modules)
    topics = args.topics or sorted(broker.get_declared_topics())
    options = commands.client_options(broker)

    def read_lag() -> tuple[int, int]:
        from broker.brokers.kafka.admin import consumer_lag

        report = consumer_lag(options, args.group, topics)
        return report["total_lag"], len(report["partitions"])

    command, template, env = child_command(args), identity_template(args), _children_environment(args)
    scaler = Autoscaler(
        policy, lambda index: spawn_child(command, template, index, env), read_lag, interval_s=args.autoscale_interval
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: scaler.stop(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: scaler.stop(signum))
    log.info("autoscale: started", extra={"min": low, "max": high, "target_lag": args.autoscale_target})
    code = scaler.run()
    broker.close()
    return code


def instance_id(template: str, index: int) -> str:
    """The static member id for process ``index``: ``template`` with ``{host}`` and ``{index}`` filled in."""
    try:
        return template.format(host=socket.gethostname(), index=index)
    except (KeyError, IndexError, ValueError) as exc:
        message = f"worker.py: --instance-id {template!r}: only {{host}} and {{index}} may be used ({exc})"
        raise SystemExit(message) from None


def _terminate_with_parent() -> None:
    """In a child, before exec: ask Linux to send SIGTERM when the parent process dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: children then outlive a killed parent
        pass


def _serve_metrics(port: int, multiprocess: bool = False) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    if multiprocess or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
        if not multiprocess:
            return  # a child of a supervisor: the parent serves the aggregated metrics
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
