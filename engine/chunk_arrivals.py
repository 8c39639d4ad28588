"""Synthetic chunk-arrival schedules for streamed prompts (Stream2LLM's two shapes).

``append`` (crawler-style): passages arrive one by one and are appended.
``update`` (vector-search-style): passages arrive by readiness, and a re-rank now
and then moves a new passage ahead of earlier ones, so the context so far is
replaced (the engine keeps only the common prefix). Times are seconds after the
query's arrival; the queries themselves arrive open-loop (Poisson).

Example::

    queries = synth_queries("update", rate=1.0, n=6, passages=corpus_passages(text), seed=0)
    queries[0].events[-1].content   # the final context, as sent whole by wait-for-all
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class ChunkEvent:
    """At ``time`` (s after the query arrived) the context becomes ``content``; ``op`` says how
    it relates to the previous content: ``append`` (extends it) or ``replace`` (revises it)."""

    time: float
    op: str
    content: list[str]  # the passages of the context so far, in order


@dataclass
class StreamedQuery:
    arrival: float  # s after the run started
    kind: str       # append | update
    events: list[ChunkEvent] = field(default_factory=list)

    @property
    def last_chunk(self) -> float:
        return self.arrival + self.events[-1].time


def corpus_passages(text: str, words: int = 18) -> list[str]:
    """Cut ``text`` into passages of about ``words`` words (a retrieval unit)."""
    toks = text.split()
    return [" ".join(toks[i:i + words]) + "\n" for i in range(0, len(toks) - words, words)]


CHUNKS = (8, 32)             # chunks per query (inclusive)
DURATION_S = (1.5, 3.0)      # the last chunk arrives within a duration drawn from this range
RERANK_P = 0.25              # update: chance that a chunk (from the third on) is re-ranked ahead


@dataclass(frozen=True)
class ChunkDraw:
    """One chunk of a drawn schedule: it arrives ``time`` s after the start and goes to the end
    of the context so far (``at`` None: an append) or is inserted at index ``at`` among the
    chunks so far (a re-rank: everything from ``at`` on is revised)."""

    time: float
    at: int | None = None


def draw_schedule(kind: str, rng: random.Random, k: int, duration_s: tuple[float, float] = DURATION_S,
                  rerank_p: float = RERANK_P) -> list[ChunkDraw]:
    """``k`` chunk arrivals of the ``append`` or ``update`` shape, times sorted; the one drawing
    rule behind ``synth_queries`` (the benchmark) and ``tether trace synth --streamed``.

    >>> [d.at for d in draw_schedule("append", random.Random(0), 3)]
    [None, None, None]
    """
    if kind not in ("append", "update"):
        raise ValueError(f"kind must be 'append' or 'update', got {kind!r}")
    times = sorted(rng.uniform(0.05, rng.uniform(*duration_s)) for _ in range(k))
    out = []
    for i, at in enumerate(times):
        if kind == "update" and i >= 2 and rng.random() < rerank_p:
            out.append(ChunkDraw(at, rng.randrange(1, i)))  # re-ranked ahead of earlier results
        else:
            out.append(ChunkDraw(at))
    return out


def synth_queries(kind: str, rate: float, n: int, passages: list[str], seed: int = 0,
                  chunks: tuple[int, int] = CHUNKS, duration_s: tuple[float, float] = DURATION_S,
                  rerank_p: float = RERANK_P) -> list[StreamedQuery]:
    """``n`` queries arriving at ``rate``/s (Poisson), each with 8-32 chunks over a few seconds."""
    if kind not in ("append", "update"):
        raise ValueError(f"kind must be 'append' or 'update', got {kind!r}")
    if rate <= 0 or n <= 0:
        raise ValueError("rate and n must be positive")
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        k = rng.randint(*chunks)
        start = rng.randrange(len(passages))
        q, content = StreamedQuery(t, kind), []
        for i, d in enumerate(draw_schedule(kind, rng, k, duration_s, rerank_p)):
            p = passages[(start + i) % len(passages)]
            if d.at is None:
                content = content + [p]
                q.events.append(ChunkEvent(d.time, "append", content))
            else:
                content = content[:d.at] + [p] + content[d.at:]
                q.events.append(ChunkEvent(d.time, "replace", content))
        out.append(q)
    return out
