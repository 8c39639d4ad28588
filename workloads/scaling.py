"""Scale a trace's token counts and times, e.g. to fit a small model's context or a short run.

    small = scale_trace(trace, token_scale=0.25, time_scale=0.1)
    fits = scale_trace(trace, max_context=2048)   # largest scale <= 1 that fits every program

Token scaling multiplies every appended and output count (rounded; at least one
output token; the turn structure and tools are kept). A scaled trace is
count-only: real text and token ids are dropped, because cutting text to a
fraction of its tokens gives neither the real prompt nor a consistent one; call
``tokenize.synthetic_token_ids`` for concrete ids. At token scale 1 everything is
kept. Time scaling multiplies tool durations and arrival times. A streamed turn's chunk
arrivals (``append_chunks``) scale with it: counts by the token scale, times by the time
scale (``chunks.rescale_chunks``). Both scales are
recorded (multiplied into any earlier ones) in ``trace.meta``.
"""

from __future__ import annotations

from typing import Any

from .chunks import rescale_chunks
from .trace import Program, Trace, TraceError


def scale_trace(trace: Trace, token_scale: float = 1.0, time_scale: float = 1.0, max_context: int | None = None,
                margin: int = 32) -> Trace:
    """A new trace with counts times ``token_scale`` and times times ``time_scale``.

    With ``max_context``, the token scale is lowered (never raised) to the largest value
    at which every program's total tokens + ``margin`` (room for special tokens a
    replayer may add) stay within ``max_context``.

    >>> from tether.workloads.synth import synthesize
    >>> t = scale_trace(synthesize(4, seed=0), max_context=4096)
    >>> max(p.total_tokens for p in t.programs) <= 4096 - 32, t.meta["token_scale"] < 1
    (True, True)
    """
    if not token_scale > 0:
        raise ValueError(f"token_scale must be > 0, got {token_scale}")
    if not time_scale >= 0:
        raise ValueError(f"time_scale must be >= 0, got {time_scale}")
    if max_context is not None:
        token_scale = fitting_scale(trace, token_scale, max_context, margin)
    programs = [_scale_program(p, token_scale, time_scale) for p in trace.programs]
    meta: dict[str, Any] = dict(trace.meta)
    meta["token_scale"] = meta.get("token_scale", 1.0) * token_scale
    meta["time_scale"] = meta.get("time_scale", 1.0) * time_scale
    if max_context is not None:
        meta["max_context"] = max_context
    return Trace(programs=programs, meta=meta)


def fitting_scale(trace: Trace, token_scale: float, max_context: int, margin: int = 32) -> float:
    """The largest scale <= ``token_scale`` at which every program fits ``max_context - margin``.

    Scaled totals are monotone in the scale, so a bisection finds it; a program whose
    turns can't fit even at the smallest sizes (one output token each) raises TraceError.
    """
    budget = max_context - margin
    if all(_scaled_total(p, token_scale) <= budget for p in trace.programs):
        return token_scale
    floor = max(trace.programs, key=lambda p: len(p.turns))
    if len(floor.turns) > budget:
        raise TraceError(f"program {floor.program_id} has {len(floor.turns)} turns: at least one token each "
                         f"can't fit max_context {max_context} - margin {margin}")
    lo, hi = 0.0, token_scale
    for _ in range(60):
        mid = (lo + hi) / 2
        if all(_scaled_total(p, mid) <= budget for p in trace.programs):
            lo = mid
        else:
            hi = mid
    return lo


def _count(n: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(n * scale)))


def _scaled_total(p: Program, s: float) -> int:
    return sum(_count(t.append_tokens, s, 0) + _count(t.output_tokens, s, 1) for t in p.turns)


def _scale_program(p: Program, s: float, time_scale: float) -> Program:
    turns = []
    for t in p.turns:
        upd: dict[str, Any] = {}
        if s != 1.0:
            upd = {"append_tokens": _count(t.append_tokens, s, 0), "output_tokens": _count(t.output_tokens, s, 1),
                   "append_messages": None, "append_token_ids": None, "output_text": None, "output_token_ids": None}
        if t.tool is not None and time_scale != 1.0:
            upd["tool"] = t.tool.model_copy(update={"duration_s": t.tool.duration_s * time_scale})
        if t.append_chunks is not None and (s != 1.0 or time_scale != 1.0):
            upd["append_chunks"] = rescale_chunks(t.append_chunks, upd.get("append_tokens", t.append_tokens),
                                                  time_scale)
        turns.append(t.model_copy(update=upd) if upd else t)
    return p.model_copy(update={"turns": turns, "arrival_s": p.arrival_s * time_scale})
