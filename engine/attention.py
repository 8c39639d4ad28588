"""Per-step attention metadata: the varlen batch layout every layer shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Flattened step: sequence ``s`` owns token rows ``query_start_loc[s]:query_start_loc[s+1]``.

    ``seq_lens[s]`` counts its tokens with KV after this step (cached prefix +
    new); ``slot_mapping[t]`` is where token row ``t``'s K/V is written.
    ``max_q_len`` and ``max_seq_len`` are the longest chunk and sequence, known
    on the host so kernels need not read them back from the device.
    """

    slot_mapping: torch.Tensor     # [num_tokens] int64
    block_tables: torch.Tensor     # [num_seqs, max_blocks] int32
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32
    seq_lens: torch.Tensor         # [num_seqs] int32
    max_q_len: int
    max_seq_len: int
    query_positions: torch.Tensor | None = None  # [num_tokens]: set when chunks skip placed tokens

    def keep_rows(self, keep: torch.Tensor, positions: torch.Tensor) -> "AttentionMetadata":
        """This step with only the rows where ``keep`` ([num_tokens] bool) is set."""
        counts = torch.zeros(len(self.seq_lens), dtype=torch.int64)
        seq_of_row = torch.repeat_interleave(torch.arange(len(self.seq_lens)),
                                             self.query_start_loc.diff().long().cpu())
        counts.index_add_(0, seq_of_row[keep.cpu()], torch.ones(int(keep.sum()), dtype=torch.int64))
        qsl = torch.zeros(len(counts) + 1, dtype=torch.int32)
        qsl[1:] = counts.cumsum(0)
        dev = self.slot_mapping.device
        return AttentionMetadata(self.slot_mapping[keep], self.block_tables, qsl.to(dev), self.seq_lens,
                                 int(counts.max()) if len(counts) else 0, self.max_seq_len, positions[keep])
