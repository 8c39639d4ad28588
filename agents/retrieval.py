"""A real retriever whose results stream: BM25 (``bm25s``) over a corpus shipped in the package.

The corpus is searched shard by shard; each shard's best passages are yielded as soon as that
shard is scored (order of readiness), then a re-rank over all of them revises the context to
the global score order (``Revised``: the update case of streamed prompts).

Example::

    r = BM25Retriever.from_package()
    reply = await ctx.chat([{"role": "user", "content": f"Question: {q}\\nContext:\\n"},
                            {"role": "user", "content": r.stream(q, k=6)}], max_tokens=64)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import AsyncIterator

import bm25s

from tether.agents.streamed import Revised


class BM25Retriever:
    """``passages`` split into ``shards`` BM25 indexes (a sharded index answers in pieces)."""

    def __init__(self, passages: list[str], shards: int = 4):
        if not passages:
            raise ValueError("BM25Retriever needs at least one passage")
        self.passages = passages
        size = -(-len(passages) // max(1, shards))
        self._shards = []
        for start in range(0, len(passages), size):
            part = passages[start:start + size]
            index = bm25s.BM25()
            index.index(bm25s.tokenize(part, stopwords="en", show_progress=False), show_progress=False)
            self._shards.append((start, part, index))

    @classmethod
    def from_package(cls, shards: int = 4) -> "BM25Retriever":
        """Over ``agents/data/tether_docs.txt`` (paragraphs of tether's architecture notes)."""
        text = (Path(__file__).with_name("data") / "tether_docs.txt").read_text()
        return cls([p.strip() for p in text.split("\n\n") if p.strip()], shards)

    def _shard_hits(self, i: int, query: str, k: int) -> list[tuple[float, int]]:
        start, part, index = self._shards[i]
        docs, scores = index.retrieve(bm25s.tokenize([query], stopwords="en", show_progress=False),
                                      k=min(k, len(part)), show_progress=False)
        return [(float(s), start + int(d)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def search(self, query: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best passages over all shards, best first, with their BM25 scores."""
        hits = sorted((h for i in range(len(self._shards)) for h in self._shard_hits(i, query, k)), reverse=True)
        return [(self.passages[d], s) for s, d in hits[:k]]

    async def stream(self, query: str, k: int = 5, delay_s: float = 0.0) -> AsyncIterator[str | Revised]:
        """Chunks for a streamed message: each shard's hits as it finishes, then the re-ranked top ``k``.

        ``delay_s`` (per shard) stands in for a remote index's latency."""
        found: list[tuple[float, int]] = []
        for i in range(len(self._shards)):
            if delay_s:
                await asyncio.sleep(delay_s)
            hits = await asyncio.to_thread(self._shard_hits, i, query, k)
            found += hits
            for _, d in hits:
                yield self.passages[d] + "\n"
        best = sorted(found, reverse=True)[:k]
        yield Revised("".join(self.passages[d] + "\n" for _, d in best))
