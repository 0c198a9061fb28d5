"""Benchmark: enqueue N no-op tasks through real Kafka, then drain them with worker.py.

    python bench/enqueue_drain.py [--messages 20000] [--processes 2] [--threads 8] [--partitions 6]

Enqueue uses ``Actor.send_many`` (producer batching, every ack awaited) and, for comparison,
one blocking ``send`` per message for the first 1,000. Drain starts ``worker.py run -p P -t T``
and stops the clock when the group's committed offsets reach the end of the topic, so it
includes process start-up and the group join. Needs the local stack (``make up``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    group = f"bench-{uuid.uuid4().hex[:8]}"
    os.environ["BENCH_TOPIC"] = topic
    from kafka import KafkaAdminClient

    from broker import set_broker
    from broker.admin import consumer_lag
    from core.settings import load_settings
    from core.wiring import make_broker

    settings = load_settings(require_jwt=False)
    broker = make_broker(settings)
    set_broker(broker)
    from bench import noop_actors

    admin = KafkaAdminClient(**broker.client_options)
    admin.create_topics({topic: {"num_partitions": args.partitions, "replication_factor": 1}})
    admin.wait_for_topics([topic])
    try:
        n = args.messages
        blocking = min(1000, n)
        started = time.perf_counter()
        for i in range(blocking):
            noop_actors.noop.send_with_options(args=(i,), key=f"device-{i % 1000}")
        one_by_one = blocking / (time.perf_counter() - started)

        started = time.perf_counter()
        noop_actors.noop.send_many(
            noop_actors.noop.message_with_options(args=(i,), key=f"device-{i % 1000}") for i in range(n - blocking)
        )
        batched = (n - blocking) / (time.perf_counter() - started)

        env = {**os.environ, "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"), "PYTHONPATH": str(ROOT)}
        started = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, "worker.py", "run", "bench.noop_actors", "--topics", topic, "--group", group,
             "--processes", str(args.processes), "--threads", str(args.threads)],
            cwd=ROOT, env=env,
        )  # fmt: skip
        while consumer_lag(broker.client_options, group, [topic])["total_lag"] > 0:
            time.sleep(0.1)
        drained = n / (time.perf_counter() - started)
        worker.terminate()
        worker.wait(60)
        print(json.dumps({
            "messages": n, "partitions": args.partitions, "processes": args.processes, "threads": args.threads,
            "enqueue_send_per_s": round(one_by_one), "enqueue_send_many_per_s": round(batched),
            "drain_per_s": round(drained),
        }))  # fmt: skip
    finally:
        broker.close()
        admin.delete_topics([topic])
        admin.close()


if __name__ == "__main__":
    main()
