"""A no-op actor for the benchmark; its topic comes from BENCH_TOPIC."""

import os

from broker import actor


@actor(topic=os.environ["BENCH_TOPIC"], max_retries=0)
def noop(n: int) -> None:
    pass
