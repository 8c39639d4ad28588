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


def synth_queries(kind: str, rate: float, n: int, passages: list[str], seed: int = 0,
                  chunks: tuple[int, int] = (8, 32), duration_s: tuple[float, float] = (1.5, 3.0),
                  rerank_p: float = 0.25) -> list[StreamedQuery]:
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
        picked = [passages[(start + i) % len(passages)] for i in range(k)]
        times = sorted(rng.uniform(0.05, rng.uniform(*duration_s)) for _ in range(k))
        q, content = StreamedQuery(t, kind), []
        for i, (p, at) in enumerate(zip(picked, times)):
            if kind == "update" and i >= 2 and rng.random() < rerank_p:
                content = list(content)
                content.insert(rng.randrange(1, len(content)), p)  # re-ranked ahead of earlier results
                q.events.append(ChunkEvent(at, "replace", content))
            else:
                content = content + [p]
                q.events.append(ChunkEvent(at, "append", content))
        out.append(q)
    return out
