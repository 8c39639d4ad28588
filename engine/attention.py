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
