"""``python -m tests.chaos.soak [--minutes 30]``: the whole system under mixed load for half an hour.

What a fault test cannot see, a soak can: memory or descriptors that grow a little per request,
keys that pile up in Redis, connections that leak, a lag that creeps. The system is the chaos
suite's (:class:`~tests.chaos.harness.Run`: the API under gunicorn with gevent workers and
``worker.py -p 2``), under constant load: devices POST at ``--post-rate`` (about half of what
the system absorbs here), readers GET cache hits at ``--get-rate``, a few poison records arrive
every minute, and the worker is restarted (SIGTERM, then started again) every ``--restart-every``
minutes. Every ``--sample`` seconds it records, per process, RSS and open file descriptors of
every API and worker process, Redis memory and key count, PostgreSQL connections and the
group's lag.

It fails on: any acknowledged event not stored exactly once or left stale (the ledger's checks),
a dead letter that is not one of the poison records, growth after the warm-up beyond the bounds
below, or a lag not bounded. A worker process's figures are compared within its own lifetime (a
restart starts a fresh one); the API processes live through the whole run. Prints a table, and
writes JSON and a chart to ``--out`` (default ``.artifacts/soak/``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kafka import KafkaProducer
from sqlalchemy import text

from broker.brokers.kafka import client_options
from broker.brokers.kafka.admin import consumer_lag
from core.settings import Settings, load_settings
from tests.chaos.harness import Run, dead_letters_since
from tests.chaos.load import Readers
from tests.chaos.scenarios import _poison_records
from tests.chaos.system import INPUT_TOPIC, ROOT, descendants, log

# growth allowed from the end of the warm-up to the end (of the run, or of a worker's lifetime)
RSS_GROWTH_BOUND = 0.25  # a quarter: allocators and caches settle slowly; a leak keeps going
RSS_GROWTH_FLOOR_MB = 20.0  # ... and never flag less than this
FD_GROWTH_BOUND = 10
REDIS_KEYS_GROWTH_BOUND = 0.25
PG_CONNECTIONS_GROWTH_BOUND = 4
LAG_BOUND_S = 30.0  # the lag may hold at most this many seconds of posts (restarts included)


@dataclass
class Sample:
    t: float
    processes: dict[str, dict[str, float]]  # "api:<pid>" / "worker:<pid>" -> {"rss_mb", "fds"}
    redis_mb: float
    redis_keys: int
    pg_connections: int
    lag: int


@dataclass
class SoakReport:
    minutes: float
    post_rate: float
    get_rate: float
    warm_up_s: float
    acked: int = 0
    lost: int = 0
    dup: int = 0
    stale: int = 0
    poison_sent: int = 0
    dead_letters: int = 0
    shed: int = 0  # requests answered 503 (overloaded) at once
    restarts: int = 0
    growth: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # what -> {figure: [start, end]}
    lag_max: int = 0
    problems: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_process(pid: int) -> dict[str, float] | None:
    """RSS (MB) and open descriptors of ``pid`` from /proc; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"rss_mb": round(rss_kb / 1024, 1), "fds": fds}


def growth(start: float, end: float) -> float:
    return round((end - start) / start, 3) if start else 0.0


def check_growth(report: SoakReport, samples: list[Sample], warm_up_s: float) -> None:
    """Compare each process's, Redis's and PostgreSQL's figures at the end of the warm-up (or of
    a worker's first minutes) with the end of the run (or of its lifetime); flag what grew."""
    steady = [s for s in samples if s.t >= warm_up_s]
    if len(steady) < 2:
        report.problems.append("too few samples after the warm-up to judge growth")
        return
    first, last = steady[0], steady[-1]
    lives: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for sample in samples:
        for name, figures in sample.processes.items():
            lives.setdefault(name, []).append((sample.t, figures))
    for name, life in lives.items():
        born = life[0][0]
        settled = [f for t, f in life if t >= max(warm_up_s, born + warm_up_s / 2)]
        if len(settled) < 2:
            continue  # lived too briefly (a worker restarted soon after) to judge
        start, end = settled[0], settled[-1]
        report.growth[name] = {"rss_mb": [start["rss_mb"], end["rss_mb"]], "fds": [start["fds"], end["fds"]]}
        rss_allowed = max(RSS_GROWTH_FLOOR_MB, RSS_GROWTH_BOUND * start["rss_mb"])
        if end["rss_mb"] - start["rss_mb"] > rss_allowed:
            report.problems.append(f"{name}: RSS {start['rss_mb']} -> {end['rss_mb']} MB")
        if end["fds"] - start["fds"] > FD_GROWTH_BOUND:
            report.problems.append(f"{name}: open descriptors {start['fds']} -> {end['fds']}")
    report.growth["redis"] = {"keys": [first.redis_keys, last.redis_keys], "mb": [first.redis_mb, last.redis_mb]}
    if growth(first.redis_keys, last.redis_keys) > REDIS_KEYS_GROWTH_BOUND:
        report.problems.append(f"Redis keys {first.redis_keys} -> {last.redis_keys}")
    report.growth["postgres"] = {"connections": [first.pg_connections, last.pg_connections]}
    if last.pg_connections - first.pg_connections > PG_CONNECTIONS_GROWTH_BOUND:
        report.problems.append(f"PostgreSQL connections {first.pg_connections} -> {last.pg_connections}")


def soak(settings: Settings, *, minutes: float, post_rate: float, get_rate: float, restart_every_min: float,
         sample_s: float) -> SoakReport:  # fmt: skip
    warm_up_s = min(300.0, minutes * 60 / 6)
    report = SoakReport(minutes=minutes, post_rate=post_rate, get_rate=get_rate, warm_up_s=warm_up_s)
    run = Run(settings, "soak")
    samples: list[Sample] = []
    stop = threading.Event()
    producer = KafkaProducer(**client_options(**settings.kafka_options), acks="all")
    poison_keys: set[bytes] = set()
    with run.running():
        devices = run.devices(count=max(1, int(post_rate // 5)), rate=post_rate).start()
        readers = [Readers(run.system.url, run.ledger, devices.ids, rate=get_rate / 4).start() for _ in range(4)]
        began = time.monotonic()
        end = began + minutes * 60
        next_restart = began + restart_every_min * 60
        next_poison = began + 60
        next_sample = began
        last_restart = began
        engine = run.engine
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                samples.append(_sample(run, settings, engine, now - began))
                next_sample += sample_s
            if now >= next_poison:
                for key, value, _ in _poison_records(f"{run.run_id}-{int(now)}", 4):
                    producer.send(INPUT_TOPIC, key=key, value=value)
                    poison_keys.add(key)
                producer.flush()
                report.poison_sent += 4
                next_poison += 60
            if now >= next_restart:
                log(f"soak: restarting the worker ({report.restarts + 1})")
                assert run.system.worker is not None  # running()
                run.system.worker.send_signal(signal.SIGTERM)
                run.system.worker.wait(timeout=120)
                run.system.start_worker()
                report.restarts += 1
                last_restart = time.monotonic()
                next_restart += restart_every_min * 60
            stop.wait(0.5)
        for reader in readers:
            reader.stop()
        # recovery: writers answered and everything acknowledged stored, from the last restart on
        result = run.finish(devices, fault_end=last_restart, max_recovery_s=60)
    producer.close()
    report.acked, report.lost, report.dup, report.stale = result.acked, result.lost, result.dup, result.stale
    report.problems.extend(result.problems)
    letters = dead_letters_since(settings, run.dlq_start)
    report.dead_letters = len(letters)
    unexpected = [r for r in letters if r.key not in poison_keys]
    if unexpected:
        report.problems.append(f"{len(unexpected)} dead letters that were not poison records")
    # a device read before its first event was stored is a 404: fine during the warm-up only; a 503
    # is the API shedding load (its loop lagged: a busy machine), answered at once: counted apart
    report.shed = run.ledger.count(lambda p: p.status == 503) + sum(1 for _, s in run.ledger.reads if s == 503)
    bad_reads = [s for t, s in run.ledger.reads if s not in (200, 503) and not (s == 404 and t < began + warm_up_s)]
    if bad_reads:
        report.problems.append(f"{len(bad_reads)} reads not answered 200")
    check_growth(report, samples, warm_up_s)
    steady_lags = [s.lag for s in samples if s.t >= warm_up_s]
    report.lag_max = max(steady_lags, default=0)
    if report.lag_max > LAG_BOUND_S * post_rate:
        report.problems.append(f"lag reached {report.lag_max} (bound {LAG_BOUND_S * post_rate:.0f})")
    report.samples = [asdict(s) for s in samples]
    return report


def _sample(run: Run, settings: Settings, engine, t: float) -> Sample:
    processes: dict[str, dict[str, float]] = {}
    api = run.system.api
    if api is not None:
        for pid in descendants(api.pid):  # gunicorn's workers (the arbiter itself does no work)
            figures = read_process(pid)
            if figures:
                processes[f"api:{pid}"] = figures
    for pid in run.system.worker_pids()[1:]:  # the worker processes, not their supervisor
        figures = read_process(pid)
        if figures:
            processes[f"worker:{pid}"] = figures
    info = run.redis.info("memory")
    # the workers' telemetry keeps an hour of 10-second buckets: it grows for an hour by design
    keys = sum(1 for key in run.redis.scan_iter(count=1000) if not key.startswith(b"telemetry:"))
    with engine.connect() as conn:
        connections = conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        ).scalar_one()
    try:
        lag = consumer_lag(client_options(**settings.kafka_options), run.system.group, [INPUT_TOPIC])["total_lag"]
    except Exception:  # Kafka busy: the sample counts the lag as unknown
        lag = -1
    return Sample(round(t, 1), processes, round(info["used_memory"] / 2**20, 1), keys, connections, lag)


def table(report: SoakReport) -> str:
    rows = [
        f"soak {report.minutes:g} min: {report.post_rate:g} POST/s, {report.get_rate:g} GET/s, "
        f"{report.restarts} worker restarts, {report.poison_sent} poison records",
        f"acked={report.acked} lost={report.lost} dup={report.dup} stale={report.stale} "
        f"dead_letters={report.dead_letters} shed={report.shed} lag_max={report.lag_max}",
        "| what | after warm-up | end |",
        "|---|---|---|",
    ]
    for name, figures in report.growth.items():
        for figure, (start, end) in figures.items():
            rows.append(f"| {name} {figure} | {start} | {end} |")
    return "\n".join(rows)


def chart(report: SoakReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in report.samples]
    fig, (rss, other, lag) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    names = sorted({n for s in report.samples for n in s["processes"]})
    for name in names:
        points = [(s["t"] / 60, s["processes"][name]["rss_mb"]) for s in report.samples if name in s["processes"]]
        rss.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1)
    rss.set_ylabel("RSS, MB")
    rss.set_title(f"soak: {report.post_rate:g} POST/s + {report.get_rate:g} GET/s, worker restarted every 10 min")
    other.plot(t, [s["redis_keys"] for s in report.samples], label="Redis keys")
    other.plot(t, [s["pg_connections"] * 10 for s in report.samples], label="PostgreSQL connections x 10")
    other.legend(loc="upper left")
    lag.plot(t, [s["lag"] for s in report.samples], color="tab:orange")
    lag.set_ylabel("consumer lag")
    lag.set_xlabel("minutes")
    for axis in (rss, other, lag):
        axis.axvline(report.warm_up_s / 60, color="tab:gray", linestyle="--")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--post-rate", type=float, default=100, help="POST /events per second (default 100)")
    parser.add_argument("--get-rate", type=float, default=200, help="cache-hit GETs per second (default 200)")
    parser.add_argument("--restart-every", type=float, default=10, help="minutes between worker restarts")
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=ROOT / ".artifacts" / "soak")
    args = parser.parse_args(argv)
    development = {"APP_ENV": "development", "JWT_SECRET": "local-dev-secret", "POSTGRES_PASSWORD": "apppass"}
    settings = load_settings({**development, **os.environ}, require_jwt=False)
    report = soak(settings, minutes=args.minutes, post_rate=args.post_rate, get_rate=args.get_rate,
                  restart_every_min=args.restart_every, sample_s=args.sample)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(asdict(report), indent=1))
    chart(report, args.out / "soak.png")
    print(table(report), flush=True)
    for problem in report.problems:
        print(f"  soak: {problem}", flush=True)
    print(f"soak: {'ok' if report.ok else 'FAILED'}; report and chart in {args.out}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
