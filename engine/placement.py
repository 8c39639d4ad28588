"""Runner side of cross-agent KV reuse: read a span's KV out of the paged cache, and
place a segment's KV at new positions before a step (write, rotate keys by the
position delta with ``rope_shift``, add anchor deltas), then tell the forward
which rows of placed tokens to check, recompute or record (``reuse_step.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tether.engine.reuse_step import ReuseStep
from tether.engine.segments import Placement
from tether.kernels import rope_shift, store_kv


@dataclass
class ReuseParams:
    """The correction's knobs (``EngineConfig.reuse_*``)."""

    check_layer: int = 1
    ratio: float = 1.5
    sink_tokens: int = 4
    tail_tokens: int = 10


def _slots(table: list[int], bs: int, lo: int, hi: int) -> torch.Tensor:
    return torch.tensor([table[p // bs] * bs + p % bs for p in range(lo, hi)], dtype=torch.int64)


def _rotated(x: torch.Tensor, deltas: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """A copy of keys ``x`` ([n, kvh, D]) moved by per-token position ``deltas``."""
    out = x.clone().unsqueeze(1)  # n blocks of one token: the cache layout rope_shift takes
    rope_shift(out, torch.arange(len(x)), deltas, inv_freq)
    return out.squeeze(1)


def read_segment_kv(runner, table: list[int], start: int, end: int
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer [end-start, kvh, D] K and V of positions ``start:end``; keys as if at 0..n-1."""
    slots = _slots(table, runner.block_size, start, end).to(runner.device)
    back = torch.full((end - start,), -start, dtype=torch.int64)
    ks, vs = [], []
    for k_cache, v_cache in runner.kv_caches:
        k = k_cache.view(-1, *k_cache.shape[2:])[slots]
        ks.append(_rotated(k, back, runner.model.inv_freq))
        vs.append(v_cache.view(-1, *v_cache.shape[2:])[slots].clone())
    return ks, vs


def _chunk(seq, n: int, pl: Placement) -> tuple[int, int]:
    """The placed positions that fall in this step's chunk of ``seq``."""
    start = seq.num_computed_tokens
    return max(start, pl.start), min(start + n, pl.end)


def place_segments(runner, batch) -> list[set[int]]:
    """Write the placed KV this step needs; returns, per sequence, positions left out of the batch."""
    inv_freq = runner.model.inv_freq
    skip: list[set[int]] = []
    for seq, n in zip(batch.seqs, batch.num_new_tokens):
        left_out: set[int] = set()
        for pl in seq.placements:
            lo, hi = _chunk(seq, n, pl)
            if lo >= hi:
                continue
            j0, j1 = pl.offset + lo - pl.start, pl.offset + hi - pl.start
            slots = _slots(seq.block_table, runner.block_size, lo, hi).to(runner.device)
            shift = torch.full((hi - lo,), pl.start - pl.offset, dtype=torch.int64)
            where = torch.arange(lo, hi, dtype=torch.int64)
            for layer, (k_cache, v_cache) in enumerate(runner.kv_caches):
                k = _rotated(pl.segment.k[layer][j0:j1], shift, inv_freq)
                v = pl.segment.v[layer][j0:j1]
                if pl.mode == "anchor" and pl.delta_k is not None and layer > 0:  # layer 0 is exact
                    d0, d1 = lo - pl.start, hi - pl.start
                    k = k + _rotated(pl.delta_k[layer][d0:d1].to(k.dtype), where, inv_freq)
                    v = v + pl.delta_v[layer][d0:d1].to(v.dtype)
                store_kv(k, v, k_cache, v_cache, slots)
            if pl.mode == "anchor":
                left_out.update(range(lo, hi))
        skip.append(left_out)
    return skip


@dataclass
class _StepReuse(ReuseStep):
    """A ReuseStep that remembers which placement each row belongs to, to report back."""

    recompute_of: list = field(default_factory=list)  # (placement, position) per recompute row
    record_of: list = field(default_factory=list)     # (placement, first, end, position) per recorded run
    inv_freq: torch.Tensor | None = None

    def finish(self) -> None:
        sel = self.selected.tolist() if self.selected is not None else []
        dev = self.deviation.tolist() if self.deviation is not None else []
        for i, (pl, pos) in enumerate(self.recompute_of):
            pl.deviation.append(dev[i] if dev else 0.0)
            if not sel or sel[i]:
                pl.recompute.append(pos)
        for pl, a, b, lo in self.record_of:
            if not pl.recorded_k:
                pl.recorded_k = [[] for _ in self.deltas_k]
                pl.recorded_v = [[] for _ in self.deltas_v]
            back = -torch.arange(lo, lo + b - a, dtype=torch.int64)  # deltas of keys, stored at position 0
            for layer, (dk, dv) in enumerate(zip(self.deltas_k, self.deltas_v)):
                pl.recorded_k[layer].append(_rotated(dk[a:b], back, self.inv_freq))
                pl.recorded_v[layer].append(dv[a:b])


def reuse_rows(runner, batch, positions: torch.Tensor, query_start_loc: torch.Tensor) -> _StepReuse | None:
    """Which rows of the flattened step are placed tokens to check (recompute) or record."""
    params: ReuseParams = runner.reuse_params
    rec_rows, forced, rec_of, record_rows, record_of = [], [], [], [], []
    pos, qsl = positions.tolist(), query_start_loc.tolist()
    for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens)):
        row_of = {p: r for r, p in enumerate(pos[qsl[i]:qsl[i + 1]], start=qsl[i])}
        for pl in seq.placements:
            lo, hi = _chunk(seq, n, pl)
            if lo >= hi or pl.mode == "anchor":
                continue
            if pl.mode == "record":
                record_of.append((pl, len(record_rows), len(record_rows) + hi - lo, lo))
                record_rows.extend(row_of[p] for p in range(lo, hi))
                continue
            for p in range(lo, hi):
                rec_rows.append(row_of[p])
                forced.append(p - pl.start < params.sink_tokens or pl.end - p <= params.tail_tokens)
                rec_of.append((pl, p))
    if not rec_rows and not record_rows:
        return None
    dev = positions.device
    step = _StepReuse(torch.tensor(rec_rows, dtype=torch.int64, device=dev),
                      torch.tensor(forced, dtype=torch.bool, device=dev),
                      torch.tensor(record_rows, dtype=torch.int64, device=dev),
                      check_layer=params.check_layer, ratio=params.ratio, recompute_of=rec_of,
                      record_of=record_of, inv_freq=runner.model.inv_freq)
    return step
