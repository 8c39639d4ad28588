"""Streamed turns (Stream2LLM): the token ids each chunk arrival carries, and rescaling.

A turn's ``append_chunks`` (``trace.ChunkArrival``) give counts only; the ids follow from
the turn's ``append_token_ids``, which the last arrival leaves. Going back from it, an
append's earlier content is a prefix of its later one; a replace's earlier content is the
kept prefix plus the tokens it revised, which no trace records: those are drawn from a
seeded generator (per seed, program id, turn and arrival), the first one differing from the
token that replaced it, so the common prefix is exactly ``keep_tokens``.

    steps = chunk_steps(turn, seed=0, program_id="p", turn_index=3)
    steps[0].op, len(steps[0].ids)   # ('append', 40): the first arrival's tokens
    steps[-1]                        # its ids end the turn's append_token_ids
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .trace import ChunkArrival, Turn

VOCAB = (1000, 40000)  # superseded tokens are drawn like tokenize.synthetic_token_ids's


@dataclass(frozen=True)
class ChunkStep:
    """What one arrival sends: ``append``: ``ids`` extend the streamed part; ``replace``:
    ``ids`` are the whole streamed part now (the engine keeps the common prefix)."""

    time_s: float  # after the turn's start, unscaled
    op: str
    ids: list[int]


def chunk_steps(turn: Turn, seed: int, program_id: str, turn_index: int) -> list[ChunkStep]:
    """The arrivals of a streamed turn with their ids; needs ``append_token_ids`` and ``append_chunks``.

    >>> from tether.workloads.trace import Turn
    >>> t = Turn(append_tokens=3, append_token_ids=[7, 8, 9], output_tokens=1, append_chunks=[
    ...     {"time_s": 0.1, "op": "append", "tokens": 2},
    ...     {"time_s": 0.5, "op": "replace", "tokens": 3, "keep_tokens": 1}])
    >>> s = chunk_steps(t, 0, "p", 1)
    >>> s[1].ids, s[0].ids[0], s[0].ids[1] != 8
    ([7, 8, 9], 7, True)
    """
    chunks = turn.append_chunks
    if chunks is None or turn.append_token_ids is None:
        raise ValueError("chunk_steps needs a turn with append_chunks and append_token_ids")
    cur = list(turn.append_token_ids)  # the streamed part after arrival k, going back from the last
    steps: list[ChunkStep] = []
    for k in range(len(chunks) - 1, -1, -1):
        c, before = chunks[k], chunks[k - 1].tokens if k else 0
        if c.op == "append":
            steps.append(ChunkStep(c.time_s, "append", cur[before:]))
            cur = cur[:before]
        else:
            steps.append(ChunkStep(c.time_s, "replace", cur))
            cur = cur[:c.keep_tokens] + _superseded(cur, c.keep_tokens, before - c.keep_tokens,
                                                   (seed, program_id, turn_index, k))
    return steps[::-1]


def _superseded(new: list[int], keep: int, n: int, key: tuple[int, str, int, int]) -> list[int]:
    """``n`` seeded ids for what a replace revised; the first differs from ``new[keep]``."""
    if n <= 0:
        return []
    seed, pid, turn, k = key
    rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(pid.encode()), turn, 2, k])
    ids = rng.integers(*VOCAB, n).tolist()
    if keep < len(new) and ids[0] == new[keep]:
        ids[0] = VOCAB[0] + (ids[0] - VOCAB[0] + 1) % (VOCAB[1] - VOCAB[0])
    return ids


def last_chunk_s(turn: Turn) -> float | None:
    """When the turn's last chunk arrives, s after its start (None: not streamed)."""
    return turn.append_chunks[-1].time_s if turn.append_chunks else None


def rescale_chunks(chunks: list[ChunkArrival] | None, total: int,
                   time_scale: float = 1.0) -> list[ChunkArrival] | None:
    """``chunks`` for a turn whose appended tokens became ``total`` (a token scale, a tokenizer):
    counts scaled alike, times by ``time_scale``; still valid (an append that no longer adds a
    token is merged into the next arrival; the last one leaves ``total``). None when nothing is left.

    >>> c = [ChunkArrival(time_s=1, op="append", tokens=10), ChunkArrival(time_s=2, op="append", tokens=20)]
    >>> [(x.time_s, x.tokens) for x in rescale_chunks(c, 5, time_scale=0.5)]
    [(0.5, 2), (1.0, 5)]
    """
    if chunks is None or total <= 0:
        return None
    f = total / chunks[-1].tokens
    out: list[ChunkArrival] = []
    prev = 0
    for i, c in enumerate(chunks):
        last = i == len(chunks) - 1
        n = total if last else max(1, round(c.tokens * f))
        op, keep = c.op, None
        if op == "append" and n <= prev:
            if not last:
                continue  # it adds nothing at this scale: its tokens come with the next arrival
            op = "replace"  # the last one must leave ``total``: shorter than before, a revision
            keep = n
        elif op == "replace":
            keep = min(round(c.keep_tokens * f), prev, n)
        out.append(ChunkArrival(time_s=c.time_s * time_scale, op=op, tokens=n, keep_tokens=keep))
        prev = n
    return out
