"""A small trace with concrete token ids, built in-process (no loader needed)."""

from __future__ import annotations

import random

from tether.workloads.trace import Program, ToolCallRecord, Trace, Turn


def small_trace(programs: int = 4, turns: int = 3, append: int = 40, output: int = 8, seed: int = 0,
                tool_s: float = 0.5, gap_s: float = 0.2) -> Trace:
    rng = random.Random(seed)
    progs = []
    for p in range(programs):
        ts = []
        for t in range(turns):
            a = append * 3 if t == 0 else append
            ts.append(Turn(append_tokens=a, append_token_ids=[rng.randrange(1000, 20000) for _ in range(a)],
                           output_tokens=output, output_token_ids=[rng.randrange(1000, 20000) for _ in range(output)],
                           tool=ToolCallRecord(name=rng.choice(["ls", "pytest", "grep"]), tool_class="shell",
                                               duration_s=tool_s * (1 + t)) if t < turns - 1 else None))
        progs.append(Program(program_id=f"p{p}", arrival_s=p * gap_s, source="test", turns=ts))
    return Trace(programs=progs, meta={"source": "small_trace", "seed": seed})


def turns_by_program(trace: Trace, run):
    """Yield (trace turn, its record, the previous record or None, expected prompt tokens) in order."""
    from tether.workloads.replay_common import TurnFeeder

    feeder = TurnFeeder(trace)
    by_key = {(r.program_id, r.turn): r for r in run.turns}
    for pi, p in enumerate(trace.programs):
        for ti, t in enumerate(p.turns):
            yield t, by_key[(p.program_id, ti)], by_key.get((p.program_id, ti - 1)), \
                feeder.expected_prompt_tokens(pi, ti)
