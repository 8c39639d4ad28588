"""What a replay records: one row per turn, KV usage samples, engine counters.

Both replay modes (simulated and real) produce a ``ReplayRun``; metrics,
tables, CSVs and plots are computed from it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TurnRecord:
    """One LLM call of one program, and the tool phase that followed it (times in seconds)."""

    program_id: str
    turn: int
    submitted_s: float          # the turn started: its request reached the engine (a streamed turn: its start,
                                # before its chunks; TTFT counts from here in both arms)
    first_token_s: float        # its first output token
    finished_s: float           # its last output token
    prompt_tokens: int
    cached_tokens: int          # prefix-hit tokens at admission
    output_tokens: int
    tool_name: str | None = None
    tool_duration_s: float = 0.0  # the tool phase after this turn (0 on the last turn)
    preemptions: int = 0
    last_chunk_s: float | None = None  # a streamed turn's last chunk arrived (None: not streamed)
    invalidated_tokens: int = 0   # computed tokens a streamed turn's replaces rolled back


@dataclass
class KVSample:
    time_s: float
    used_blocks: int            # referenced by running requests or pins
    pinned_blocks: int
    cached_blocks: int          # unreferenced but still holding reusable content
    host_blocks: int = 0        # held in the host-memory tier


@dataclass
class ReplayRun:
    """Everything one policy's replay produced."""

    policy: str
    mode: str                     # "sim" or "real"
    turns: list[TurnRecord] = field(default_factory=list)
    program_arrivals: dict[str, float] = field(default_factory=dict)
    kv_samples: list[KVSample] = field(default_factory=list)
    kv_total_blocks: int = 0
    engine_stats: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0           # how long the replay itself took to run
    meta: dict[str, Any] = field(default_factory=dict)  # trace meta, scales, seed, profile
