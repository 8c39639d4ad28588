"""Chunk arrivals for a trace's turns, drawn with Stream2LLM's published shapes.

``append`` (crawler-style): the turn's appended tokens arrive as passages, one after another.
``update`` (vector-search-style): passages arrive by readiness and now and then one is
re-ranked ahead of earlier ones, so the streamed part is replaced from there on.
Both use ``engine.chunk_arrivals.draw_schedule``, the rule ``tether bench streaming``
draws with: 8-32 chunks over 1.5-3 s, re-rank probability 0.25 (update).

Which turns stream: those whose previous tool is retrieval-like, by class (default
``search`` and ``view``: a grep's matches, a file read, both arrive as passages), each with
probability ``share`` (default 1). The first turn (the task prompt) never streams. A
turn's appended tokens are cut into min(chunks, tokens) near-equal passages; times are
seconds after the turn's start (the previous tool's return).

    trace = add_chunk_arrivals(synthesize(20, seed=0, rate=0.5), "update", seed=0)
    trace.streamed_turns, trace.meta["streamed"]["shape"]
"""

from __future__ import annotations

import random

from tether.engine.chunk_arrivals import CHUNKS, draw_schedule

from .trace import ChunkArrival, Trace, check_chunks

STREAMED_CLASSES = ("search", "view")


def add_chunk_arrivals(trace: Trace, shape: str, seed: int = 0, share: float = 1.0,
                       classes: tuple[str, ...] = STREAMED_CLASSES) -> Trace:
    """A copy of ``trace`` whose qualifying turns get ``append_chunks`` of ``shape`` (see module doc).

    >>> from tether.workloads.synth import synthesize
    >>> t = add_chunk_arrivals(synthesize(4, seed=0), "append", seed=0)
    >>> t.streamed_turns > 0, t.meta["streamed"]["classes"]
    (True, ['search', 'view'])
    """
    if shape not in ("append", "update"):
        raise ValueError(f"shape must be 'append' or 'update', got {shape!r}")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    programs, n = [], 0
    for p in trace.programs:
        turns = list(p.turns)
        for k in range(1, len(turns)):
            tool, turn = turns[k - 1].tool, turns[k]
            if tool is None or tool.tool_class not in classes or turn.append_tokens < 1:
                continue
            rng = random.Random(f"{seed}:{p.program_id}:{k}")  # per turn: one turn's draw shifts no other
            if rng.random() >= share:
                continue
            arrivals = draw_arrivals(shape, rng, turn.append_tokens)
            check_chunks(arrivals, turn.append_tokens)  # model_copy does not validate
            turns[k] = turn.model_copy(update={"append_chunks": arrivals})
            n += 1
        programs.append(p.model_copy(update={"turns": turns}))
    meta = {**trace.meta, "streamed": {"shape": shape, "seed": seed, "share": share, "classes": list(classes),
                                       "turns": n}}
    return Trace(programs=programs, meta=meta)


def draw_arrivals(shape: str, rng: random.Random, tokens: int) -> list[ChunkArrival]:
    """One turn's arrivals: ``tokens`` appended tokens cut into passages arriving as ``shape``.

    >>> a = draw_arrivals("update", random.Random(1), 300)
    >>> 8 <= len(a) <= 32, a[-1].tokens, {x.op for x in a} <= {"append", "replace"}
    (True, 300, True)
    """
    k = min(rng.randint(*CHUNKS), tokens)
    sizes = [tokens * (i + 1) // k - tokens * i // k for i in range(k)]  # near-equal, each >= 1
    order: list[int] = []  # passages of the streamed part, in their current order
    out, total = [], 0
    for i, d in enumerate(draw_schedule(shape, rng, k)):
        if d.at is None:
            order.append(i)
            total += sizes[i]
            out.append(ChunkArrival(time_s=d.time, op="append", tokens=total))
        else:  # a re-rank: passage i goes in at index d.at; the part from there on is revised
            keep = sum(sizes[j] for j in order[:d.at])
            order.insert(d.at, i)
            total += sizes[i]
            out.append(ChunkArrival(time_s=d.time, op="replace", tokens=total, keep_tokens=keep))
    return out
