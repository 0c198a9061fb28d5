"""The processing gap when a worker joins and when one leaves, eager vs cooperative rebalancing.

    python -m bench.rebalance [--rate 300] [--phase 15]

For each assignor (``range``: eager; ``cooperative-sticky``: incremental), on a fresh 6-partition
topic: two ``worker.py`` processes (4 threads each) work a steady load of ``--rate`` no-op tasks
a second over 60 keys (each task records when it completed, per key, in Redis). After a warm-up
a third process joins; ``--phase`` seconds later the first one leaves (SIGTERM: it drains,
commits and leaves the group); ``--phase`` seconds later the load stops. For each phase it
reports the longest time with no task completing anywhere (the group-wide gap: what an eager
rebalance costs), the longest gap of any one key, and how many keys waited more than a second
(only the partitions that move, under the cooperative protocol). Clock: completion timestamps
written by the tasks themselves. Results are printed and saved under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from kafka import KafkaAdminClient  # noqa: E402

from broker import KafkaBroker, Message  # noqa: E402
from core.settings import load_settings  # noqa: E402
from tests.helpers import stop_processes, wait_for  # noqa: E402

ASSIGNORS = ("range", "cooperative-sticky")


def run_mode(assignor: str, args: argparse.Namespace, settings, client: redis.Redis, logs: Path) -> dict:
    rate, phase_s, keys, work_ms = args.rate, args.phase, args.keys, args.task_ms
    tag = f"{assignor}-{uuid.uuid4().hex[:6]}"
    topic, group, done_list = f"bench-rebalance-{tag}", f"bench-rebalance-{tag}", f"bench:rebalance:{tag}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics({topic: {"num_partitions": 6, "replication_factor": 1}})
    admin.wait_for_topics([topic], timeout_ms=30000)
    env = {**os.environ, "KAFKA_ASSIGNOR": assignor, "BENCH_TOPIC": topic, "BENCH_LIST": done_list,
           "KAFKA_CONSUMER_GROUP": group, "LOG_LEVEL": "INFO",
           "POSTGRES_PASSWORD": settings.postgres_password}  # fmt: skip
    procs: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        log = open(logs / f"{tag}-worker-{len(procs)}.log", "wb")  # noqa: SIM115
        argv = [sys.executable, "worker.py", "run", "bench.rebalance_actors", "--topics", topic, "--group", group,
                "-t", str(args.threads), "--shutdown-timeout", "10000"]  # fmt: skip
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    broker = KafkaBroker(**settings.kafka_options, delay_prefix=None)
    sending = threading.Event()
    sending.set()
    sent = [0]

    def load() -> None:
        n, started = 0, time.monotonic()
        while sending.is_set():
            due = int((time.monotonic() - started) * rate)
            batch = [Message(actor_name="tick", topic=topic, args=(f"k{i % keys}", work_ms), key=f"k{i % keys}")
                     for i in range(n, due)]  # fmt: skip
            if batch:
                broker.enqueue_many(batch)
                n = due
                sent[0] = n
            time.sleep(0.02)

    try:
        start_worker(), start_worker()
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        # warm-up: both members in the group and every key completing
        wait_for(lambda: client.llen(done_list) >= rate * 3, timeout=120, interval=0.5)
        time.sleep(5)
        marks = {"join": time.time()}
        start_worker()
        time.sleep(phase_s)
        marks["leave"] = time.time()
        procs[0].send_signal(signal.SIGTERM)
        time.sleep(phase_s)
        marks["end"] = time.time()
        sending.clear()
        loader.join()
        total = sent[0]
        wait_for(lambda: client.llen(done_list) >= total, timeout=120, interval=0.5,
                 message=f"{client.llen(done_list)} of {total}")  # fmt: skip
    finally:
        sending.clear()
        stop_processes(procs, timeout=60)
        broker.close()
        admin.delete_topics([topic])
        admin.close()
    completions = [line.decode().split() for line in client.lrange(done_list, 0, -1)]
    client.delete(done_list)
    events = sorted((float(t), key) for key, t in completions)
    result = {"assignor": assignor, "rate": rate, "keys": keys, "task_ms": work_ms, "threads": args.threads,
              "sent": total, "completed": len(events)}  # fmt: skip
    result["join"] = gaps(events, marks["join"] - 1, marks["leave"], keys)
    result["leave"] = gaps(events, marks["leave"] - 1, marks["end"], keys)
    result["timeline"] = timeline(events, marks)
    return result


def timeline(events: list[tuple[float, str]], marks: dict[str, float]) -> dict[str, list[int]]:
    """Completions per 250 ms from a second before each event to 8 s after (for reading the gap)."""
    out = {}
    for name in ("join", "leave"):
        start = marks[name] - 1
        counts = [0] * 36
        for t, _ in events:
            slot = int((t - start) / 0.25)
            if 0 <= slot < len(counts):
                counts[slot] += 1
        out[name] = counts
    return out


def gaps(events: list[tuple[float, str]], start: float, end: float, keys: int) -> dict:
    """Within [start, end): the longest interval with no completion at all, each key's longest
    interval between completions (max over keys), and how many keys waited over a second."""
    window = [(t, k) for t, k in events if start <= t < end]
    times = [start] + [t for t, _ in window] + [end]
    group_gap = max(b - a for a, b in itertools.pairwise(times))
    per_key: dict[str, list[float]] = {}
    for t, key in window:
        per_key.setdefault(key, [start]).append(t)
    key_gaps = {k: max(b - a for a, b in itertools.pairwise([*ts, end])) for k, ts in per_key.items()}
    return {
        "group_gap_s": round(group_gap, 3),
        "worst_key_gap_s": round(max(key_gaps.values(), default=end - start), 3),
        "keys_waiting_over_1s": sum(1 for g in key_gaps.values() if g > 1.0),
        "keys": keys,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--phase", type=float, default=15.0)
    parser.add_argument("--assignors", default=",".join(ASSIGNORS), help="comma-separated")
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--task-ms", type=int, default=0, help="how long each task works (sleeps)")
    parser.add_argument("--threads", type=int, default=4, help="worker threads per process")
    args = parser.parse_args()
    settings = load_settings({"POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", "apppass"), **os.environ},
                             require_jwt=False)  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url)
    logs = ROOT / "bench" / "results" / "rebalance-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = [run_mode(a, args, settings, client, logs) for a in args.assignors.split(",")]
    print(f"\nRebalance gap at {args.rate} tasks/s of {args.task_ms} ms over {args.keys} keys, 6 partitions, "
          f"2 -> 3 -> 2 worker processes of {args.threads} threads")  # fmt: skip
    print(f"{'assignor':<20}{'event':<8}{'group-wide gap':>16}{'worst key gap':>15}{'keys > 1 s':>12}")
    for r in results:
        for event in ("join", "leave"):
            g = r[event]
            print(f"{r['assignor']:<20}{event:<8}{g['group_gap_s']:>14.2f} s{g['worst_key_gap_s']:>13.2f} s"
                  f"{g['keys_waiting_over_1s']:>9} of {g['keys']}")  # fmt: skip
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench" / "results" / f"rebalance-{stamp}.json"
    out.write_text(json.dumps({"at": stamp, "results": results}, indent=2))
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
