"""KVCOMM's anchor pool: measured deviations of placed KV, reused to correct new placements.

A *placeholder* is where in a prompt template a shared segment lands; here, the
prompt's first tokens (which agent) and the tokens just before it. Per placeholder the pool keeps anchors: for one segment
seen there, its base KV (layer 1 values, the distance space) and the delta
dense-prefill KV minus placed KV, per layer and token. A new segment's delta is
estimated per token: for each anchor, the nearest anchor token in base space;
anchors weighted by a softmax over minus those distances. When the weights are
too uniform (normalized entropy above ``entropy_threshold``) or the placeholder
has no anchor yet, the placement is prefilled densely once and becomes an anchor.
Layer 0 is never corrected (its KV depends on the token and position only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tether.engine.segments import Placement

CONTEXT_TOKENS = 8   # the tokens just before a placement: the template text leading into its slot
PROMPT_HEAD = 16     # the prompt's first tokens: whose template (agent) it is


@dataclass
class Anchor:
    base: torch.Tensor               # [n, F] layer-1 base values of the anchor's tokens
    delta_k: list[torch.Tensor]      # per layer [n, kvh, D], keys at position 0
    delta_v: list[torch.Tensor]
    uses: int = 0

    @property
    def num_tokens(self) -> int:
        return self.base.shape[0]


def placeholder(prompt: list[int], start: int) -> tuple[int, ...]:
    """Names a slot in an agent's prompt template: the prompt's head and the text before the slot."""
    return tuple(prompt[:min(PROMPT_HEAD, start)]) + (-1,) + tuple(prompt[max(0, start - CONTEXT_TOKENS):start])


class AnchorPool:
    """Example::

        pool = AnchorPool(max_per_placeholder=20, max_tokens=32768)
        pool.prepare(placement, key)        # sets placement.mode to "anchor" or "record"
        ... the step runs ...
        pool.record(placement, key)         # after a "record" placement was prefilled
    """

    def __init__(self, max_per_placeholder: int = 20, max_tokens: int = 8192, entropy_threshold: float = 0.9):
        self.max_per_placeholder = max_per_placeholder
        self.max_tokens = max_tokens
        self.entropy_threshold = entropy_threshold
        self.pools: dict[tuple[int, ...], list[Anchor]] = {}
        self.num_tokens = 0

    @staticmethod
    def _base(pl: Placement) -> torch.Tensor:
        return pl.segment.v[1][pl.offset:pl.offset + pl.length].flatten(1).float()

    def prepare(self, pl: Placement, key: tuple[int, ...]) -> None:
        anchors = self.pools.get(key)
        if not anchors:
            pl.mode = "record"
            return
        base = self._base(pl)
        dists, nearest = [], []
        for a in anchors:
            d = torch.cdist(base, a.base)  # [n, n_a]
            m, j = d.min(dim=1)
            dists.append(m)
            nearest.append(j)
        dist = torch.stack(dists, dim=1)                      # [n, A]
        tau = dist.mean().clamp_min(1e-6)
        w = torch.softmax(-dist / tau, dim=1)                 # [n, A]
        if len(anchors) > 1:
            entropy = -(w * w.clamp_min(1e-12).log()).sum(1).mean() / math.log(len(anchors))
            if entropy > self.entropy_threshold:  # no anchor is clearly closer: learn a new one
                pl.mode = "record"
                return
        pl.mode = "anchor"
        layers = len(anchors[0].delta_k)
        pl.delta_k = [sum(w[:, i, None, None] * a.delta_k[layer][nearest[i]] for i, a in enumerate(anchors))
                      for layer in range(layers)]
        pl.delta_v = [sum(w[:, i, None, None] * a.delta_v[layer][nearest[i]] for i, a in enumerate(anchors))
                      for layer in range(layers)]
        for i, a in enumerate(anchors):
            a.uses += 1

    def record(self, pl: Placement, key: tuple[int, ...]) -> None:
        """Turn a densely prefilled placement's measured deltas into an anchor."""
        if not pl.recorded_k:
            return
        dk = [torch.cat(chunks) for chunks in pl.recorded_k]
        dv = [torch.cat(chunks) for chunks in pl.recorded_v]
        if dk[0].shape[0] != pl.length:  # the placement was not prefilled whole (preempted)
            return
        anchor = Anchor(self._base(pl), dk, dv)
        pool = self.pools.setdefault(key, [])
        pool.append(anchor)
        self.num_tokens += anchor.num_tokens
        if len(pool) > self.max_per_placeholder:
            self._evict(pool)
        while self.num_tokens > self.max_tokens and any(self.pools.values()):
            self._evict(max(self.pools.values(), key=len))

    def _evict(self, pool: list[Anchor]) -> None:
        """The least used of the older half goes (KVCOMM: least used of the oldest)."""
        older = pool[:max(1, len(pool) // 2)]
        victim = min(older, key=lambda a: a.uses)
        pool.remove(victim)
        self.num_tokens -= victim.num_tokens
