"""How long to pin a program's KV across its tool call: TTL rules, registered by name.

``none`` never pins (vLLM's behaviour). ``continuum-fixed`` is Continuum's
released rule (``vllm/v1/core/estimate_with_func.py``, ``set_up_pin``): pin 2 s
when the mean of the tool's own observed durations is at most 2 s, or when the
tool was never seen. ``cost-benefit`` is Continuum's paper rule, done
with tether's own inputs: choose TTL = argmax_t P(tool done by t) * benefit -
cost(t), where benefit is the re-prefill time the pin saves plus the queueing
delay of losing the program's place, and cost(t) is the pool share the pin
holds over t, weighted by current memory pressure; 0 when nothing pays.

A new rule is one class with ``decide`` plus ``TTL_RULES.register(name, cls)``;
``EngineConfig(pin_policy=name)`` selects it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from tether.engine.registry import Registry
from tether.engine.tool_predictor import ToolDurationPredictor, prob_done_by


@dataclass
class PinQuestion:
    """What a TTL policy sees when a program's turn ends in tool calls."""

    program_id: str
    tool_keys: list[str]
    pin_blocks: int          # blocks the pin would hold
    pool_blocks: int
    pinned_blocks: int       # already held by other pins
    pressure: float          # share of the pool referenced by running requests and pins, 0..1
    refill_s: float          # time to get this KV back without the pin (re-prefill)
    queue_s: float           # expected wait for a new turn behind others, if the pin is lost


@dataclass
class PinDecision:
    ttl_s: float
    value: float  # expected net benefit; the lowest-value pin is released first under pressure


class TTLPolicy(ABC):
    name: str

    @classmethod
    def from_config(cls, config) -> "TTLPolicy":
        """Build the rule from an ``EngineConfig`` (rules with knobs read theirs)."""
        return cls()

    @abstractmethod
    def decide(self, q: PinQuestion, predictor: ToolDurationPredictor, now: float) -> PinDecision: ...


class NoPin(TTLPolicy):
    name = "none"

    def decide(self, q, predictor, now) -> PinDecision:
        return PinDecision(0.0, 0.0)


class ContinuumFixed(TTLPolicy):
    """Pin ``ttl_s`` when the tool is new or its own mean is at most ``threshold_s`` (Continuum's
    ``set_up_pin``: ``mean > 2.0`` -> no pin, else 2.0; a never-seen tool's mean counts as 0).
    Several tools at once: the slowest mean decides."""

    name = "continuum-fixed"

    def __init__(self, threshold_s: float = 2.0, ttl_s: float = 2.0):
        self.threshold_s = threshold_s
        self.ttl_s = ttl_s

    def decide(self, q, predictor, now) -> PinDecision:
        means = [predictor.own_mean(k) for k in q.tool_keys]
        if max((m or 0.0 for m in means), default=0.0) <= self.threshold_s:
            return PinDecision(self.ttl_s, -(now + self.ttl_s))  # released latest-expiry first, as Continuum
        return PinDecision(0.0, 0.0)


class CostBenefit(TTLPolicy):
    """argmax_t P(done by t) * (refill + queue) - pressure * share * t, with a cap on pinned memory."""

    name = "cost-benefit"

    def __init__(self, max_pin_share: float = 0.5, max_ttl_s: float = 600.0):
        self.max_pin_share = max_pin_share
        self.max_ttl_s = max_ttl_s

    @classmethod
    def from_config(cls, config) -> "CostBenefit":
        return cls(config.max_pin_share)

    def decide(self, q, predictor, now) -> PinDecision:
        if q.pin_blocks == 0 or q.pinned_blocks + q.pin_blocks > self.max_pin_share * q.pool_blocks:
            return PinDecision(0.0, 0.0)  # pins together may hold at most max_pin_share of the pool
        samples = predictor.samples(q.tool_keys)
        benefit = q.refill_s + q.queue_s
        share = q.pin_blocks / q.pool_blocks
        # Holding memory costs others only when memory is scarce: weight by pressure, sharply.
        weight = q.pressure ** 2
        best_t, best_v = 0.0, 0.0
        for t in samples:
            if t > self.max_ttl_s:
                break
            v = prob_done_by(samples, t) * benefit - weight * share * t
            if v > best_v:
                best_t, best_v = t, v
        # Slack: the next turn arrives a little after the tool ends (program and RPC overhead).
        return PinDecision(best_t * 1.1 + 0.05 if best_v > 0 else 0.0, best_v)


TTL_RULES: Registry[type[TTLPolicy]] = Registry("TTL rule")
for _rule in (NoPin, ContinuumFixed, CostBenefit):
    TTL_RULES.register(_rule.name, _rule)
