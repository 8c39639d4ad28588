"""The segment store: KV of token spans, indexed by content, independent of position.

A *segment* is a span whose KV the engine computed once (a chat message's content,
a request's generated output). Its keys are stored rotated to position 0 (token i
at position i, the "base" KVCOMM speaks of), so the same text found at another
position of another prompt can be placed there: rotate by the new start, then
correct. Matching is on token ids: every ``GRAM``-token window of every segment is
indexed, so a known span is found at any offset of a new prompt, whole or in part.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

GRAM = 8                # tokens in an index key
MAX_CANDIDATES = 8      # index entries checked per prompt position (repetitive text)


@dataclass
class Segment:
    """A span's token ids and its base KV: per layer [n, kv_heads, head_dim], keys at position 0."""

    segment_id: str
    token_ids: tuple[int, ...]
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    source_request_id: str | None = None
    source_program_id: str | None = None
    uses: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Placement:
    """``length`` tokens of ``segment`` (from ``offset``) placed at prompt position ``start``.

    ``mode``: ``recompute`` (check, recompute the deviating tokens), ``anchor`` (add the
    estimated deltas ``delta_k``/``delta_v``, compute nothing), or ``record`` (dense
    prefill over placed KV, keeping the measured deltas to make an anchor)."""

    segment: Segment
    start: int
    offset: int
    length: int
    mode: str = "recompute"
    delta_k: list[torch.Tensor] | None = None  # per layer [length, kvh, D], keys at position 0
    delta_v: list[torch.Tensor] | None = None
    recompute: list[int] = field(default_factory=list)  # placed positions recomputed past the check layer
    deviation: list[float] = field(default_factory=list)  # per checked token, at the check layer
    recorded_k: list[list[torch.Tensor]] = field(default_factory=list)  # per layer, chunks in order
    recorded_v: list[list[torch.Tensor]] = field(default_factory=list)
    reported: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def token_ids(self) -> tuple[int, ...]:
        return self.segment.token_ids[self.offset:self.offset + self.length]


def segment_id(token_ids: tuple[int, ...]) -> str:
    """A position-free content hash of a span's token ids."""
    return hashlib.blake2b(repr(token_ids).encode(), digest_size=12).hexdigest()


class SegmentStore:
    """Segments under a token budget, least recently used evicted first.

    Example::

        store = SegmentStore(max_tokens=8192, min_tokens=32)
        store.add(ids, k_layers, v_layers, source_request_id="r1")
        placements = store.match(prompt_ids, start=hit_tokens, end=len(prompt_ids) - 1)
    """

    def __init__(self, max_tokens: int, min_tokens: int):
        self.max_tokens = max_tokens
        self.min_tokens = max(min_tokens, GRAM)
        self.segments: OrderedDict[str, Segment] = OrderedDict()
        self._index: dict[tuple[int, ...], list[tuple[str, int]]] = {}
        self.num_tokens = 0

    def __contains__(self, token_ids: tuple[int, ...]) -> bool:
        return segment_id(token_ids) in self.segments

    def add(self, token_ids: tuple[int, ...], k: list[torch.Tensor], v: list[torch.Tensor],
            source_request_id: str | None = None, source_program_id: str | None = None) -> Segment | None:
        """Store a span's base KV; None when it is too short, too long or already stored."""
        sid = segment_id(token_ids)
        if len(token_ids) < self.min_tokens or len(token_ids) > self.max_tokens or sid in self.segments:
            return None
        while self.num_tokens + len(token_ids) > self.max_tokens:
            self._evict()
        seg = Segment(sid, tuple(token_ids), k, v, source_request_id, source_program_id)
        self.segments[sid] = seg
        self.num_tokens += seg.num_tokens
        for off in range(seg.num_tokens - GRAM + 1):
            self._index.setdefault(token_ids[off:off + GRAM], []).append((sid, off))
        return seg

    def _evict(self) -> None:
        sid, seg = self.segments.popitem(last=False)
        self.num_tokens -= seg.num_tokens
        ids = seg.token_ids
        for off in range(seg.num_tokens - GRAM + 1):
            key = ids[off:off + GRAM]
            entries = [e for e in self._index.get(key, ()) if e[0] != sid]
            if entries:
                self._index[key] = entries
            else:
                self._index.pop(key, None)

    def match(self, prompt: list[int], start: int, end: int) -> list[Placement]:
        """Stored spans of at least ``min_tokens`` found in ``prompt[start:end]``, greedy longest
        first from the left, not overlapping."""
        out: list[Placement] = []
        p = start
        while p + self.min_tokens <= end:
            best: tuple[int, str, int] | None = None
            for sid, off in self._index.get(tuple(prompt[p:p + GRAM]), ())[:MAX_CANDIDATES]:
                seg = self.segments[sid]
                n = _common_prefix(prompt, p, end, seg.token_ids, off)
                if n >= self.min_tokens and (best is None or n > best[0]):
                    best = (n, sid, off)
            if best is None:
                p += 1
                continue
            n, sid, off = best
            seg = self.segments[sid]
            self.segments.move_to_end(sid)
            seg.uses += 1
            out.append(Placement(seg, p, off, n))
            p += n
        return out


def _common_prefix(prompt: list[int], p: int, end: int, ids: tuple[int, ...], off: int) -> int:
    """How many tokens ``prompt[p:end]`` and ``ids[off:]`` share from their starts."""
    n = min(end - p, len(ids) - off)
    step = 64
    i = 0
    while i < n:  # compare slices (C speed), then find the first difference in the last one
        j = min(i + step, n)
        if tuple(prompt[p + i:p + j]) != ids[off + i:off + j]:
            while prompt[p + i] == ids[off + i]:
                i += 1
            return i
        i = j
    return n
