"""Scheduling policies a replay compares, registered by name.

A policy is a set of ``EngineConfig`` fields: the same engine code runs under
each, in simulated and in real mode. Later policies (Continuum's rule,
tether's own) register here without touching the harness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    engine: dict[str, Any] = field(default_factory=dict)  # EngineConfig overrides
    host_tier: bool = False  # uses the replay's host-memory tier (ReplaySettings.host_kv_blocks)

    def engine_config(self, host_kv_blocks: int) -> dict[str, Any]:
        return dict(self.engine, host_kv_blocks=host_kv_blocks if self.host_tier else 0)


POLICIES: dict[str, Policy] = {}


def register(policy: Policy) -> Policy:
    if policy.name in POLICIES:
        raise ValueError(f"policy {policy.name!r} is already registered")
    POLICIES[policy.name] = policy
    return policy


def get_policies(names: str | list[str]) -> list[Policy]:
    """``"baseline,tether"`` or a list -> policies; unknown names list the known ones."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise ValueError(f"unknown policy {unknown[0] if unknown else '(none)'}; known: {', '.join(POLICIES)}")
    return [POLICIES[n] for n in names]


register(Policy("baseline", "request FCFS, LRU eviction, no pins: what a vLLM user gets",
                {"queue_policy": "fcfs", "eviction_policy": "lru"}))
register(Policy("continuum-fixed", "Continuum's released rule: program FCFS; pin 2 s when the tool's mean is "
                "under 2 s or the tool is new", {"queue_policy": "program-fcfs", "pin_policy": "continuum-fixed"}))
register(Policy("tether", "program FCFS with pinned turns first; TTL by cost-benefit over each tool's learned "
                "duration distribution, pins capped at half the pool; a request waiting longer than one recent "
                "turn service time is starved: it goes first and only it may end pins; other prompts are "
                "admitted only when all of their chunks fit; evicted blocks of programs in a tool call go to "
                "the host tier",
                {"queue_policy": "program-fcfs", "pin_policy": "cost-benefit", "pins_yield_to": "starved",
                 "starvation_turns": 1.0, "admit_whole_prompt": True}, host_tier=True))
