"""Policy presets: named bundles of scheduling fields, selected by ``EngineConfig(policy=...)``.

A preset fills every scheduling field the config does not set itself, so
``EngineConfig(policy="baseline", host_kv_blocks=0)`` is the baseline with one field changed.
The same presets drive the engine that users get (``tether serve --policy``,
``Runtime(policy=...)``) and the replay harness (``tether replay --policies``).

Example::

    EngineConfig(policy="continuum-fixed").queue_policy   # 'program-fcfs'
    POLICY_PRESETS.names()   # ['baseline', 'baseline-offload', 'continuum-fixed', 'tether']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.engine.registry import Registry

DEFAULT_POLICY = "tether"


@dataclass(frozen=True)
class PolicyPreset:
    name: str
    description: str
    fields: dict[str, Any] = field(default_factory=dict)  # EngineConfig fields

    @property
    def uses_host_tier(self) -> bool:
        return self.fields.get("host_tier", "off") != "off"


POLICY_PRESETS: Registry[PolicyPreset] = Registry("policy")


def register_preset(preset: PolicyPreset) -> PolicyPreset:
    return POLICY_PRESETS.register(preset.name, preset)


# Fields every preset sets, so a preset never inherits another's choice.
_VLLM = {"queue_policy": "fcfs", "eviction_policy": "lru", "pin_policy": "none", "max_pin_share": 0.5,
         "starvation_s": None,
         "starvation_turns": None, "pins_yield_to": "any", "pin_pressure": "release-first",
         "admit_whole_prompt": False, "host_tier": "off", "reuse": "off"}

register_preset(PolicyPreset(
    "baseline", "what vLLM gives: request FCFS, LRU eviction of the prefix cache, no pins, no offload tier",
    dict(_VLLM)))
register_preset(PolicyPreset(
    "baseline-offload", "vLLM with a CPU offload tier (native offloading or LMCache): request FCFS, every "
    "evicted prefix-cache block goes to host memory under LRU and comes back by copy",
    dict(_VLLM, host_tier="all")))
register_preset(PolicyPreset(
    "continuum-fixed", "Continuum's released scheduler: program FCFS, pin 2 s when the tool's mean is at most "
    "2 s or the tool is new; no starvation rule; pins end for admission only when nothing runs; a running "
    "request short of blocks preempts the youngest program first and keeps pins; with the LMCache CPU "
    "offload tier its README shows",
    dict(_VLLM, queue_policy="continuum", pin_policy="continuum-fixed", pins_yield_to="idle",
         pin_pressure="preempt-first", host_tier="all")))
register_preset(PolicyPreset(
    "tether", "program FCFS with pinned turns first; TTL by cost-benefit over each tool's learned duration "
    "distribution, pins capped at 80% of the pool; a request waiting longer than three recent turn service "
    "times for its first token is starved and goes first; other prompts are admitted only when all of their "
    "chunks fit; pins end for admission only while nothing runs; a running request short of blocks preempts "
    "the lowest-priority request first and ends pins only when at most one runs; every evicted block goes "
    "to the host tier; text another prompt already computed reuses its KV, placed and corrected by "
    "recomputing the tokens that deviate",
    dict(_VLLM, queue_policy="program-fcfs", pin_policy="cost-benefit", max_pin_share=0.8, starvation_turns=3.0,
         starvation_s=60.0, pins_yield_to="idle", pin_pressure="preempt-first", admit_whole_prompt=True,
         host_tier="all", reuse="recompute")))


def parse_policies(names: str | list[str]) -> list[PolicyPreset]:
    """``"baseline,tether"`` or a list -> presets; an unknown name lists the known ones."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no policy given; known: {', '.join(POLICY_PRESETS)}")
    return [POLICY_PRESETS.get(n) for n in names]
