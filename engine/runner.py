"""Runners execute a scheduled step. The model runner flattens it into one varlen
batch and runs one forward call; a simulated runner (replay) has the same interface."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import torch

from tether.engine.attention import AttentionMetadata
from tether.engine.model import PagedCausalLM
from tether.engine.sampler import SampleResult, Sampler
from tether.engine.scheduler import ScheduledBatch
from tether.engine.sequence import Sequence
from tether.engine.placement import place_segments, read_segment_kv, reuse_rows
from tether.kernels import copy_blocks


class Runner(ABC):
    """Computes a step: for each sequence whose tokens are now all computed, one sample."""

    @abstractmethod
    def execute(self, batch: ScheduledBatch) -> list[SampleResult | None]:
        """One result per ``batch.seqs`` entry: a sample, or None for a mid-prompt chunk."""

    supports_reuse = False  # can read and place KV (cross-agent reuse)

    def forget(self, request_id: str) -> None:
        """The request is gone; drop any per-request state."""

    def prefill_time_s(self, tokens: int) -> float:
        """Estimated time to prefill ``tokens`` tokens (what losing their KV would cost)."""
        return tokens * 1e-3

    def copy_time_s(self, blocks: int) -> float:
        """Estimated time to copy ``blocks`` blocks between the device and the host tier."""
        return blocks * 1e-4

    def swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> None:
        """Copy blocks device -> host (``swap_out``), then host -> device (``swap_in``)."""
        raise NotImplementedError(f"{type(self).__name__} has no host tier")


def forced_token(seq: Sequence) -> int | None:
    """The token ``forced_output_ids`` dictates for this sequence's next output, if any."""
    forced = seq.sampling.forced_output_ids
    return None if forced is None else forced[seq.num_output_tokens]


class ModelRunner(Runner):
    supports_reuse = True
    def __init__(self, model: PagedCausalLM, num_blocks: int, block_size: int, seed: int = 0,
                 host_blocks: int = 0):
        self.model = model
        self.block_size = block_size
        self.kv_caches = model.allocate_kv_cache(num_blocks, block_size)
        # The host tier: same layout in CPU memory (pinned when the device is a GPU, for fast copies).
        self.host_caches = [(torch.zeros((host_blocks, *k.shape[1:]), dtype=k.dtype, pin_memory=k.is_cuda),
                             torch.zeros((host_blocks, *v.shape[1:]), dtype=v.dtype, pin_memory=v.is_cuda))
                            for k, v in self.kv_caches] if host_blocks else []
        self.sampler = Sampler(seed)
        self.device = model.device
        self._s_per_token: float | None = None  # measured on this machine's prefill-heavy steps
        self._s_per_copied_block: float | None = None  # measured on host-tier copies

    def forget(self, request_id: str) -> None:
        self.sampler.forget(request_id)

    def read_kv(self, seq: Sequence, start: int, end: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """K/V of ``seq``'s tokens ``start:end`` per layer, keys rotated as if ``start`` were 0."""
        return read_segment_kv(self, seq.block_table, start, end)

    def prepare(self, batch: ScheduledBatch, skip: list[set[int]] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int], torch.Tensor]:
        """Input ids, positions, attention metadata, the index in ``batch.seqs`` of each sampling
        sequence, and the token row whose logits it samples from (its last).

        ``skip[i]``: positions of sequence i left out of the batch (placed KV used as is)."""
        bs = self.block_size
        ids, pos, slots, qsl, lens, sample_rows, logits_rows = [], [], [], [0], [], [], []
        for i, (seq, n) in enumerate(zip(batch.seqs, batch.num_new_tokens)):
            start = seq.num_computed_tokens
            end = start + n
            rows = range(start, end)
            if skip and skip[i]:
                rows = [p for p in rows if p not in skip[i]]
                ids.extend(seq.token_ids[p] for p in rows)
            else:
                ids.extend(seq.token_ids[start:end])
            pos.extend(rows)
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in rows)
            qsl.append(qsl[-1] + len(rows))
            lens.append(end)
            if end == seq.num_tokens:
                sample_rows.append(i)
                logits_rows.append(qsl[-1] - 1)
        max_blocks = max(len(s.block_table) for s in batch.seqs)
        tables = torch.zeros((len(batch.seqs), max_blocks), dtype=torch.int32)
        for i, seq in enumerate(batch.seqs):
            tables[i, :len(seq.block_table)] = torch.tensor(seq.block_table, dtype=torch.int32)
        dev = self.device
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            block_tables=tables.to(dev),
            query_start_loc=torch.tensor(qsl, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(lens, dtype=torch.int32, device=dev),
            max_q_len=max(batch.num_new_tokens), max_seq_len=max(lens),
            query_positions=torch.tensor(pos, dtype=torch.int64, device=dev) if skip and any(skip) else None)
        return (torch.tensor(ids, dtype=torch.int64, device=dev), torch.tensor(pos, dtype=torch.int64, device=dev),
                meta, sample_rows, torch.tensor(logits_rows, dtype=torch.int64, device=dev))

    def prefill_time_s(self, tokens: int) -> float:
        return tokens * (self._s_per_token if self._s_per_token is not None else 1e-3)

    def copy_time_s(self, blocks: int) -> float:
        if self._s_per_copied_block is not None:
            return blocks * self._s_per_copied_block
        k = self.kv_caches[0][0]  # until a copy is measured: bytes over a typical bandwidth
        block_bytes = 2 * len(self.kv_caches) * k[0].numel() * k.element_size()
        return blocks * block_bytes / (20e9 if k.is_cuda else 5e9)  # PCIe vs. host memcpy

    def swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> None:
        t0 = time.perf_counter()
        self._swap(swap_out, swap_in)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        rate = (time.perf_counter() - t0) / (len(swap_out) + len(swap_in))  # measured copy speed
        prev = self._s_per_copied_block
        self._s_per_copied_block = rate if prev is None else 0.8 * prev + 0.2 * rate

    def _swap(self, swap_out: list[tuple[int, int]], swap_in: list[tuple[int, int]]) -> None:
        for pairs, outward in ((swap_out, True), (swap_in, False)):
            if not pairs:
                continue
            src = torch.tensor([a for a, _ in pairs], dtype=torch.int64)
            dst = torch.tensor([b for _, b in pairs], dtype=torch.int64)
            for (k, v), (hk, hv) in zip(self.kv_caches, self.host_caches):
                if outward:
                    copy_blocks(k, hk, src, dst)
                    copy_blocks(v, hv, src, dst)
                else:
                    copy_blocks(hk, k, src, dst)
                    copy_blocks(hv, v, src, dst)

    def execute(self, batch: ScheduledBatch) -> list[SampleResult | None]:
        t0 = time.perf_counter()
        results = self._execute(batch)
        if batch.num_tokens >= 64:  # prefill-heavy: a clean per-token cost sample
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # time the compute, not just its launch
            rate = (time.perf_counter() - t0) / batch.num_tokens
            self._s_per_token = rate if self._s_per_token is None else 0.8 * self._s_per_token + 0.2 * rate
        return results

    def _execute(self, batch: ScheduledBatch) -> list[SampleResult | None]:
        placing = any(seq.placements for seq in batch.seqs)
        skip = place_segments(self, batch) if placing else None
        input_ids, positions, meta, sample_rows, logits_indices = self.prepare(batch, skip)
        results: list[SampleResult | None] = [None] * len(batch.seqs)
        reuse = reuse_rows(self, batch, positions, meta.query_start_loc) if placing else None
        logits = self.model.forward(input_ids, positions, meta, self.kv_caches, logits_indices, reuse)
        if reuse is not None:
            reuse.finish()
        if not sample_rows:
            return results
        seqs = [batch.seqs[i] for i in sample_rows]
        samples = self.sampler.sample(logits, [s.sampling for s in seqs], [s.request_id for s in seqs],
                                      [forced_token(s) for s in seqs])
        for i, r in zip(sample_rows, samples):
            results[i] = r
        return results
