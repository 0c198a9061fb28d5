"""Worker processes on one host, kept at the number :class:`~broker.autoscale.AutoscalePolicy` asks for.

``worker.py run --autoscale MIN,MAX`` runs this instead of a fixed ``--processes N``. Each child is
an ordinary single-process ``worker.py run`` with an index (0, 1, ...: the lowest free one), so a
static identity (``--instance-id '{host}-{index}'``) comes back with the same index. Removing a
process sends it SIGTERM: it drains, commits and leaves the group, as in any scale-in. A child
that dies on its own is replaced at the next tick, so the count holds through crashes.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from broker.autoscale import AutoscalePolicy

log = logging.getLogger(__name__)

# (total lag, partition count) of the group on its topics; raises when Kafka does not answer
LagReader = Callable[[], tuple[int, int]]
# starts child ``index`` and returns it
Spawn = Callable[[int], subprocess.Popen[bytes]]


class Autoscaler:
    """Adds and removes child processes by the group's lag, every ``interval_s``."""

    def __init__(self, policy: AutoscalePolicy, spawn: Spawn, read_lag: LagReader, *, interval_s: float = 15.0):
        self.policy = policy
        self.spawn = spawn
        self.read_lag = read_lag
        self.interval_s = interval_s
        self.desired = policy.minimum
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping: dict[int, subprocess.Popen[bytes]] = {}  # index -> a child draining after SIGTERM
        self._stop = threading.Event()

    def run(self) -> int:
        """Until :meth:`stop`: keep ``desired`` children, revisiting it every interval. Then drain them all."""
        self._converge()
        while not self._stop.wait(self.interval_s):
            self._tick()
        return self._drain()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Forward ``signum`` to the children and end :meth:`run`. The first one goes to the running
        children (the ones being removed already had theirs: a second would end their drain); a
        second one goes to all, which then exit at once."""
        children = [*self.running.values(), *(self.stopping.values() if self._stop.is_set() else ())]
        self._stop.set()
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    def status(self) -> dict[str, Any]:
        return {"desired": self.desired, "running": sorted(self.running), "stopping": sorted(self.stopping)}

    def _tick(self) -> None:
        self._reap()
        try:
            lag, partitions = self.read_lag()
        except Exception as exc:  # Kafka away: hold the count, still replace crashed children
            log.warning("autoscale: cannot read the lag; keeping the process count", extra={"error": str(exc)})
        else:
            desired = self.policy.decide(time.monotonic(), self.desired, lag, partitions)
            if desired != self.desired:
                log.info("autoscale", extra={"from": self.desired, "to": desired, "lag": lag, "partitions": partitions})
                self.desired = desired
        self._converge()

    def _converge(self) -> None:
        while len(self.running) < self.desired and not self._stop.is_set():
            # the lowest index neither running nor still draining: a draining child keeps its
            # static identity until it has left, or the new one would fence it (and its leaving
            # would then remove the new one from the group)
            taken = set(self.running) | set(self.stopping)
            index = min(set(range(len(taken) + 1)) - taken)
            self.running[index] = child = self.spawn(index)
            if self._stop.is_set():  # a signal came while it started: it missed the forwarding
                child.send_signal(signal.SIGTERM)
            log.info("autoscale: started a worker process", extra={"index": index, "pid": self.running[index].pid})
        while len(self.running) > self.desired:
            index = max(self.running)
            child = self.running.pop(index)
            child.send_signal(signal.SIGTERM)  # drain, commit, leave the group
            self.stopping[index] = child
            log.info("autoscale: stopping a worker process", extra={"index": index, "pid": child.pid})

    def _reap(self) -> None:
        for index, child in list(self.running.items()):
            if child.poll() is not None:
                del self.running[index]
                log.warning(
                    "autoscale: a worker process exited on its own; replacing it",
                    extra={"index": index, "pid": child.pid, "code": child.returncode},
                )
        self.stopping = {index: child for index, child in self.stopping.items() if child.poll() is None}

    def _drain(self) -> int:
        """Wait for every child: :meth:`stop` has already passed them the signal."""
        codes = [child.wait() for child in [*self.running.values(), *self.stopping.values()]]
        self.running.clear()
        self.stopping.clear()
        return max(codes, default=0)
