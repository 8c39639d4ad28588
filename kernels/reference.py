"""Plain-torch references for every op in ``tether.kernels``.

These define the semantics the Triton kernels must match, and they are what the
engine runs on CPU tensors. KV layout per layer: ``[num_blocks, block_size,
num_kv_heads, head_dim]``; slot = block_id * block_size + offset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def store_kv(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
             v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write rows ``key[i]``/``value[i]`` ([T, kv_heads, head_dim]) into slot ``slot_mapping[i]``.

    A negative slot means "skip this row" (padding).
    """
    num_blocks, block_size = k_cache.shape[:2]
    slots = slot_mapping.long()
    if bool((slots < 0).any()):
        valid = slots >= 0
        slots, key, value = slots[valid], key[valid], value[valid]
    # index_copy_: several times faster on CPU than an indexed assignment of the same rows.
    k_cache.view(num_blocks * block_size, *k_cache.shape[2:]).index_copy_(0, slots, key.to(k_cache.dtype))
    v_cache.view(num_blocks * block_size, *v_cache.shape[2:]).index_copy_(0, slots, value.to(v_cache.dtype))


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_tables: torch.Tensor, query_start_loc: torch.Tensor,
                    seq_lens: torch.Tensor, scale: float,
                    query_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Attention for a varlen batch of decodes and prefill chunks over the paged cache.

    ``q``: [num_tokens, num_heads, head_dim]; sequence ``s`` owns query rows
    ``query_start_loc[s]:query_start_loc[s+1]`` (its newest tokens) and has
    ``seq_lens[s]`` tokens in all, already stored in the cache through
    ``block_tables[s]``. Query row ``j`` of a ``q_len``-token chunk sits at
    position ``seq_len - q_len + j`` and attends causally to keys ``0..that``.
    Returns [num_tokens, num_heads, head_dim].

    Decode rows (``q_len == 1``) run as padded batches, since per-sequence calls
    would cost more in dispatch than in arithmetic on a CPU; one batch per group
    of similar lengths, so one long context does not pad every short one to it.

    ``query_positions`` ([num_tokens]), when given, says where each query row sits
    instead: a chunk's rows may then skip positions (tokens whose KV was placed from
    another prompt and is not recomputed); each row attends to keys ``0..its position``.
    """
    qsl = query_start_loc.tolist()
    lens = seq_lens.tolist()
    if query_positions is not None:
        return _sparse_queries(q, k_cache, v_cache, block_tables, qsl, lens, query_positions, scale)
    decodes = [s for s in range(len(lens)) if qsl[s + 1] - qsl[s] == 1]
    groups = _length_groups(decodes, lens)
    if len(decodes) == q.shape[0] and len(groups) == 1:  # the common step: no row shuffling
        return _decode_batch(q, k_cache, v_cache, block_tables, seq_lens, max(lens), scale)
    out = torch.empty_like(q)
    for group in groups:
        rows = [qsl[s] for s in group]
        out[rows] = _decode_batch(q[rows], k_cache, v_cache, block_tables[group], seq_lens[group],
                                  lens[group[0]], scale)
    for s, seq_len in enumerate(lens):
        start, end = qsl[s], qsl[s + 1]
        if end - start > 1:
            out[start:end] = prefill_one(q[start:end], k_cache, v_cache, block_tables[s], seq_len, scale)
    return out


def _sparse_queries(q, k_cache, v_cache, block_tables, qsl, lens, query_positions, scale):
    out = torch.empty_like(q)
    for s, seq_len in enumerate(lens):
        start, end = qsl[s], qsl[s + 1]
        if end > start:
            out[start:end] = prefill_one(q[start:end], k_cache, v_cache, block_tables[s], seq_len, scale,
                                         query_positions[start:end])
    return out


def _length_groups(seqs: list[int], lens: list[int]) -> list[list[int]]:
    """``seqs`` by length, longest first, cut where a length falls under half its group's longest:
    padding at most doubles a group's work."""
    groups: list[list[int]] = []
    for s in sorted(seqs, key=lambda s: -lens[s]):
        if groups and 2 * lens[s] >= lens[groups[-1][0]]:
            groups[-1].append(s)
        else:
            groups.append([s])
    return groups


def _gather(cache: torch.Tensor, blocks: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[..., n_blocks] block ids -> [..., num_tokens, kv_heads, head_dim] rows in order."""
    # index_select copies whole rows; advanced indexing is several times slower on CPU.
    x = torch.index_select(cache, 0, blocks.reshape(-1).long())
    return x.reshape(*blocks.shape[:-1], -1, *cache.shape[2:])[..., :num_tokens, :, :]


def _decode_batch(q, k_cache, v_cache, block_tables, seq_lens, max_len, scale):
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    n_blocks = -(-max_len // block_size)
    k = _gather(k_cache, block_tables[:, :n_blocks], max_len).transpose(1, 2)  # [B, kvh, L, D]
    v = _gather(v_cache, block_tables[:, :n_blocks], max_len).transpose(1, 2)
    mask = torch.arange(max_len, device=q.device)[None, :] < seq_lens.to(q.device)[:, None].long()
    # GQA: the query heads sharing a KV head become that head's query rows (one position, no
    # causal mask), so each KV head is read once instead of expanded per query head.
    B, H, D = q.shape
    o = F.scaled_dot_product_attention(q.reshape(B, kv_heads, H // kv_heads, D).to(k.dtype), k, v,
                                       attn_mask=mask[:, None, None, :], scale=scale)
    return o.reshape(B, H, D).to(q.dtype)


def prefill_one(q, k_cache, v_cache, block_table, seq_len, scale, positions=None):
    """Attention for one sequence's chunk of ``q_len`` newest rows (or rows at ``positions``) over its cache."""
    block_size = k_cache.shape[1]
    q_len = q.shape[0]
    n_blocks = -(-seq_len // block_size)
    k = _gather(k_cache, block_table[:n_blocks], seq_len).transpose(0, 1)  # [kvh, L, D]
    v = _gather(v_cache, block_table[:n_blocks], seq_len).transpose(0, 1)
    if positions is not None:  # rows at given positions
        return _rows_at(q, k, v, positions.to(q.device).long(), scale)
    if q_len == seq_len:
        mask, causal = None, True
    else:  # query j sees keys up to (seq_len - q_len + j)
        qpos = torch.arange(seq_len - q_len, seq_len, device=q.device)[:, None]
        mask, causal = torch.arange(seq_len, device=q.device)[None, :] <= qpos, False
    # 4-D inputs: torch's CPU flash kernel takes them; 3-D ones fall back to the math path.
    o = F.scaled_dot_product_attention(q.transpose(0, 1).to(k.dtype)[None], k[None], v[None], attn_mask=mask,
                                       is_causal=causal, scale=scale, enable_gqa=True)
    return o[0].transpose(0, 1).to(q.dtype)


# Rows at explicit positions go in runs of this many, each against keys up to its last row's position
# (not the whole context): a masked kernel cannot skip the keys a row may not see, so a prompt's own early
# rows would otherwise pay for its full length.
POSITION_RUN_ROWS = 128


def _rows_at(q, k, v, positions, scale):
    out = torch.empty_like(q)
    ar = torch.arange(k.shape[1], device=q.device)
    for s in range(0, q.shape[0], POSITION_RUN_ROWS):
        pos = positions[s:s + POSITION_RUN_ROWS]
        last = int(pos.max()) + 1
        o = F.scaled_dot_product_attention(q[s:s + len(pos)].transpose(0, 1).to(k.dtype)[None], k[None, :, :last],
                                           v[None, :, :last], attn_mask=ar[None, :last] <= pos[:, None],
                                           scale=scale, enable_gqa=True)
        out[s:s + len(pos)] = o[0].transpose(0, 1).to(q.dtype)
    return out


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_shift(k_cache: torch.Tensor, slots: torch.Tensor, deltas: torch.Tensor,
               inv_freq: torch.Tensor) -> None:
    """Rotate cached keys in place: the key in ``slots[i]`` moves by ``deltas[i]`` positions.

    k at p+d = k_p * cos(d*w) + rotate_half(k_p) * sin(d*w), with ``w`` the
    model's own ``inv_freq`` ([head_dim/2]), computed in fp32. A negative slot is skipped.
    """
    num_blocks, block_size = k_cache.shape[:2]
    flat = k_cache.view(num_blocks * block_size, *k_cache.shape[2:])
    valid = slots >= 0
    idx = slots[valid].long()
    k = flat[idx].float()                                           # [N, kvh, D]
    freqs = deltas[valid].float()[:, None] * inv_freq.float()[None, :]  # [N, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]             # [N, 1, D]
    flat[idx] = (k * emb.cos() + rotate_half(k) * emb.sin()).to(k_cache.dtype)


def copy_blocks(src: torch.Tensor, dst: torch.Tensor, src_ids: torch.Tensor,
                dst_ids: torch.Tensor) -> None:
    """Copy whole blocks ``src[src_ids[i]]`` into ``dst[dst_ids[i]]`` (pools may differ in device)."""
    dst[dst_ids.to(dst.device).long()] = src[src_ids.to(src.device).long()].to(dst.device, dst.dtype)
