"""How many worker processes one host should run, from the group's lag (``worker.py run --autoscale``).

For deployments without a platform autoscaler (one host, a VM, a systemd unit), and for ECS
tasks sized for more than one process. The rule is target tracking on backlog per process, as
the ECS policy does per task (``deploy/autoscaling/worker-scaling-policy.json``): the group's
total lag divided by the processes running should stay at or under ``target_lag``.

- **Out fast:** when ``ceil(lag / target_lag)`` exceeds the processes running, add them all at
  once (up to ``maximum``), then wait ``scale_out_cooldown_s`` before adding more, so the new
  members' first work shows in the lag before the next decision.
- **In slow:** remove one process at a time, and only once the lag has stayed low enough for
  ``scale_in_cooldown_s`` without a break and that long after the last change. "Low enough"
  leaves head room (hysteresis): the remaining processes would still be under
  ``scale_in_ratio`` x the target, so a lag hovering around a boundary does not flap.
- **Never more processes than partitions:** a member beyond the partition count gets nothing.

The policy is a plain object fed ``now``; :class:`Autoscaler` in :mod:`broker.supervisor` runs it
against real processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class AutoscalePolicy:
    """The decision rule; :meth:`decide` is called every interval with the latest lag."""

    minimum: int
    maximum: int
    target_lag: int = 5000
    scale_out_cooldown_s: float = 30.0
    scale_in_cooldown_s: float = 120.0
    scale_in_ratio: float = 0.8
    _last_change: float = field(default=float("-inf"), init=False)
    _low_since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"autoscale needs 1 <= MIN <= MAX, not {self.minimum},{self.maximum}")
        if self.target_lag < 1:
            raise ValueError("the target lag per process must be at least 1")

    def decide(self, now: float, running: int, lag: int, partitions: int | None = None) -> int:
        """How many processes should run from now on, given ``running`` and the group's ``lag``."""
        ceiling = self.maximum if not partitions else max(self.minimum, min(self.maximum, partitions))
        wanted = min(ceiling, max(self.minimum, math.ceil(lag / self.target_lag)))
        if running < self.minimum or running > ceiling:  # crashed processes, or a changed ceiling
            return self._changed(now, min(ceiling, max(self.minimum, running)))
        if wanted > running:
            self._low_since = None
            if now - self._last_change < self.scale_out_cooldown_s:
                return running
            return self._changed(now, wanted)
        # in: only with head room for the processes that stay, held for the whole cooldown
        low = running > self.minimum and lag <= (running - 1) * self.target_lag * self.scale_in_ratio
        if not low:
            self._low_since = None
            return running
        if self._low_since is None:
            self._low_since = now
        if now - max(self._low_since, self._last_change) < self.scale_in_cooldown_s:
            return running
        self._last_change = now  # the lag is still low: the next one waits a cooldown from here
        self._low_since = now
        return running - 1

    def _changed(self, now: float, count: int) -> int:
        self._last_change = now
        self._low_since = None
        return count


def parse_range(text: str) -> tuple[int, int]:
    """``"MIN,MAX"`` -> ``(MIN, MAX)``, for ``--autoscale``."""
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--autoscale takes MIN,MAX (two whole numbers), not {text!r}") from None
    if not 1 <= low <= high:
        raise ValueError(f"--autoscale needs 1 <= MIN <= MAX, not {text!r}")
    return low, high
