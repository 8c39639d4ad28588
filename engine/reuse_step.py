"""What the runner hands the model for a step with placed KV, and what comes back.

Placed tokens' KV is already in the cache (rotated, maybe anchor-corrected) when
the forward starts. Rows of placed tokens that are in the batch are handled per
layer here:

* ``recompute`` rows (CacheBlend / RelayCaching): every layer up to ``check_layer``
  runs for them (their fresh K/V overwrite the placed ones there); at the check
  layer each row's value deviation 1 - cos(fresh, placed) is measured, and only
  rows above ``ratio`` times the mean, plus the ``forced`` ones (a segment's first
  and last tokens), go on through the later layers. The others keep placed KV.
* ``record`` rows (KVCOMM anchors): dense prefill; at every layer the delta
  fresh - placed is kept so the anchor pool can learn from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ReuseStep:
    recompute_rows: torch.Tensor          # [R] int64 rows of the flat batch
    forced: torch.Tensor                  # [R] bool: recompute whatever the deviation
    record_rows: torch.Tensor             # [M] int64 rows whose per-layer deltas are recorded
    check_layer: int = 1
    ratio: float = 1.5
    # filled in by the forward
    deviation: torch.Tensor | None = None     # [R] at the check layer
    selected: torch.Tensor | None = None      # [R] bool: went on past the check layer
    deltas_k: list[torch.Tensor] = field(default_factory=list)  # per layer [M, kvh, D]
    deltas_v: list[torch.Tensor] = field(default_factory=list)

    def before_store(self, layer: int, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> torch.Tensor | None:
        """Look at the placed KV about to be overwritten; returns the rows to keep from here on
        (at the check layer), else None."""
        flat_k = k_cache.view(-1, *k_cache.shape[2:])
        flat_v = v_cache.view(-1, *v_cache.shape[2:])
        if len(self.record_rows):
            slots = slot_mapping[self.record_rows]
            self.deltas_k.append(k[self.record_rows].float() - flat_k[slots].float())
            self.deltas_v.append(v[self.record_rows].float() - flat_v[slots].float())
        if layer != self.check_layer or not len(self.recompute_rows):
            return None
        fresh = v[self.recompute_rows].float()
        placed = flat_v[slot_mapping[self.recompute_rows]].float()
        cos = torch.nn.functional.cosine_similarity(fresh, placed, dim=-1)  # [R, kvh]
        self.deviation = (1 - cos).mean(dim=-1)
        self.selected = self.forced | (self.deviation > self.ratio * self.deviation.mean())
        keep = torch.ones(k.shape[0], dtype=torch.bool, device=k.device)
        keep[self.recompute_rows[~self.selected]] = False
        if len(self.record_rows):  # recorded rows are all kept: renumber them for the later layers
            self.record_rows = (torch.cumsum(keep, 0) - 1)[self.record_rows]
        return keep
