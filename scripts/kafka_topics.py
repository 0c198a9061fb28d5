"""Wait for a Kafka broker to answer, then create topics that do not exist yet.

Used by ``scripts/stack up``. Idempotent: existing topics are left as they are.

    python scripts/kafka_topics.py --bootstrap 127.0.0.1:9092 --timeout 60 events-input:6 events-dlq:6
    python scripts/kafka_topics.py --bootstrap 127.0.0.1:19092 --replication-factor 3 events-input:6
"""

from __future__ import annotations

import argparse
import sys
import time

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError


def connect(bootstrap: str, timeout_s: float) -> KafkaAdminClient:
    """Return an admin client once the broker answers, or exit with a clear error."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="stack-topics",
                request_timeout_ms=5000,
                bootstrap_timeout_ms=5000,
            )
        except KafkaError as exc:  # broker still starting
            last_error = exc
            time.sleep(0.5)
    sys.exit(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {last_error}")


def ensure_topics(admin: KafkaAdminClient, specs: dict[str, int], replication_factor: int = 1) -> None:
    """Create each missing topic with the given partition count and replication factor."""
    existing = set(admin.list_topics())
    missing = {name: n for name, n in specs.items() if name not in existing}
    if missing:
        try:
            admin.create_topics(
                {name: {"num_partitions": n, "replication_factor": replication_factor} for name, n in missing.items()}
            )
        except TopicAlreadyExistsError:  # created concurrently by someone else
            pass
    admin.wait_for_topics(list(specs), timeout_ms=30000)
    for name in specs:
        print(f"  topic {name}: {'created' if name in missing else 'exists'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("topics", nargs="+", help="NAME:PARTITIONS")
    args = parser.parse_args()
    specs = {}
    for spec in args.topics:
        name, _, partitions = spec.partition(":")
        specs[name] = int(partitions or 1)
    admin = connect(args.bootstrap, args.timeout)
    try:
        ensure_topics(admin, specs, args.replication_factor)
    finally:
        admin.close()


if __name__ == "__main__":
    main()
