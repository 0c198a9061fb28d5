"""Application Auto Scaling's target tracking, as AWS documents it, for the ECS worker policy.

``deploy/autoscaling/worker-scaling-policy.json`` tracks *backlog per task* (``ConsumerLag /
RunningTaskCount``) at a target of 5,000. What AWS does with such a policy, and so what this
model does, once per metric period (one minute in CloudWatch, divided here by a time factor):

- It creates two CloudWatch alarms. The **high alarm** fires when the metric has been above the
  target for 3 consecutive datapoints; the **low alarm** when it has been below 90 % of the
  target for 15 consecutive datapoints. No data is not low: nothing scales in on missing data.
- While the high alarm is firing, capacity becomes ``ceil(capacity x metric / target)`` (at most
  the maximum). During the **scale-out cooldown** "the capacity that has been added by the
  previous scale out ... is calculated as part of the desired capacity for the next scale out":
  read here as computing the next step from the capacity *before* that scale-out, so the tasks
  just added are not counted twice, and scaling out again only if that asks for more.
- While the low alarm is firing and no **scale-in cooldown** runs, capacity becomes
  ``ceil(capacity x metric / target)`` (at least the minimum). A scale-out ends a scale-in
  cooldown at once ("scales out immediately").

``time_factor`` divides the period and both cooldowns, so a run takes minutes instead of hours;
the datapoint counts, the target and the bounds stay as the policy file says.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HIGH_DATAPOINTS = 3
LOW_DATAPOINTS = 15
LOW_FRACTION = 0.9
PERIOD_S = 60.0


@dataclass
class TargetTracking:
    target: float
    minimum: int
    maximum: int
    scale_out_cooldown_s: float
    scale_in_cooldown_s: float
    period_s: float = PERIOD_S
    _history: list[float] = field(default_factory=list, init=False)
    _last_out: tuple[float, int] | None = field(default=None, init=False)  # (when, capacity before it)
    _last_in: float | None = field(default=None, init=False)

    @classmethod
    def from_policy_files(cls, time_factor: float = 1.0) -> TargetTracking:
        """The worker's policy and scalable target from ``deploy/autoscaling/``, ``time_factor`` times faster."""
        autoscaling = ROOT / "deploy" / "autoscaling"
        policy = json.loads((autoscaling / "worker-scaling-policy.json").read_text())
        bounds = json.loads((autoscaling / "worker-scalable-target.json").read_text())
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        return cls(
            target=config["TargetValue"],
            minimum=bounds["MinCapacity"],
            maximum=bounds["MaxCapacity"],
            scale_out_cooldown_s=config["ScaleOutCooldown"] / time_factor,
            scale_in_cooldown_s=config["ScaleInCooldown"] / time_factor,
            period_s=PERIOD_S / time_factor,
        )

    def datapoint(self, now: float, capacity: int, metric: float | None) -> int:
        """One period's datapoint (``None``: no data); returns the capacity from now on."""
        self._history.append(math.nan if metric is None else metric)
        del self._history[: -max(HIGH_DATAPOINTS, LOW_DATAPOINTS)]
        if metric is None:
            return capacity
        wanted = math.ceil(capacity * metric / self.target)
        if self._firing(HIGH_DATAPOINTS, lambda m: m > self.target):
            if self._last_out is not None and now - self._last_out[0] < self.scale_out_cooldown_s:
                wanted = math.ceil(self._last_out[1] * metric / self.target)  # the added capacity counts
            wanted = min(self.maximum, wanted)
            if wanted > capacity:
                if self._last_out is None or now - self._last_out[0] >= self.scale_out_cooldown_s:
                    self._last_out = (now, capacity)
                self._last_in = None  # a scale-out ends the scale-in cooldown
                return wanted
            return capacity
        if self._firing(LOW_DATAPOINTS, lambda m: m < LOW_FRACTION * self.target):
            wanted = max(self.minimum, wanted)
            in_cooldown = self._last_in is not None and now - self._last_in < self.scale_in_cooldown_s
            if wanted < capacity and not in_cooldown:
                self._last_in = now
                return wanted
        return capacity

    def _firing(self, datapoints: int, breaching) -> bool:
        recent = self._history[-datapoints:]
        return len(recent) == datapoints and all(not math.isnan(m) and breaching(m) for m in recent)
