"""Triton paged attention for a varlen batch of decodes and prefill chunks.

Semantics are those of ``reference.paged_attention``: sequence ``s`` owns query
rows ``query_start_loc[s]:query_start_loc[s+1]`` (its newest ``q_len`` tokens,
already stored in the cache), has ``seq_lens[s]`` tokens in all, and query row
``j`` sits at position ``seq_len - q_len + j`` and sees keys ``0..that``.

One call makes up to three launches; each kernel takes the sequences of its kind
and its programs for other sequences return at once:

* ``_prefill_kernel``: sequences with ``q_len >= 2`` (prefill chunks, with or
  without a cached prefix). Grid (query tile, kv head, sequence); each program
  streams the sequence's KV, causally masked, through an online softmax.
* ``_decode_kernel``: sequences with ``q_len == 1``. A decode has a single query
  row per head, so a (sequence, kv head) grid is tiny for a few long sequences.
  Flash-decoding split-K: the KV range is cut into ``split_size``-token chunks,
  one program each, which write partial (max, sum, unnormalized acc) results.
* ``_decode_reduce_kernel``: merges those partials into the output. With a
  single split the decode kernel writes the output itself and this is skipped.

GQA: a program serves one kv head and all ``group`` query heads that share it,
packed as rows of one tile (row r = token r // group, head r % group), so each
K/V tile is loaded once per group, not once per query head.

Softmax runs in the log2 domain (scores pre-multiplied by scale * log2(e), then
``exp2``) with fp32 statistics and accumulator whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

# Running max starts finite so a row that has seen only masked (-inf) scores
# yields exp2(-inf - _NEG_INIT) = 0 rather than exp2(-inf + inf) = NaN.
_NEG_INIT = tl.constexpr(-1.0e30)

_MIN_DOT = 16          # tl.dot needs every dim >= 16 on GPU
_MIN_SPLIT = 256       # default split-K chunk never goes below this many tokens


# --------------------------------------------------------------------------- shared helpers

@triton.jit
def _load_kv_tile(cache_ptr, bt_row_ptr, pos, pos_valid, kvh, d, d_valid,
                  stride_b, stride_s, stride_h, stride_d, BLOCK_SIZE: tl.constexpr):
    """Gather the [BLOCK_N, BLOCK_D] K or V rows at token positions ``pos`` through the block table."""
    blk = tl.load(bt_row_ptr + pos // BLOCK_SIZE, mask=pos_valid, other=0).to(tl.int64)
    ptrs = (cache_ptr + blk[:, None] * stride_b + (pos % BLOCK_SIZE)[:, None] * stride_s
            + kvh * stride_h + d[None, :] * stride_d)
    return tl.load(ptrs, mask=pos_valid[:, None] & d_valid[None, :], other=0.0)


@triton.jit
def _attend_range(q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, bt_row_ptr, kvh,
                  kv_start, kv_end, qpos, d, d_valid, scale_log2,
                  stride_kb, stride_ks, stride_kh, stride_kd,
                  stride_vb, stride_vs, stride_vh, stride_vd,
                  CAUSAL: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                  DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Online-softmax update of (m_i, l_i, acc) with keys ``kv_start..kv_end-1``.

    ``q`` is [M, BLOCK_D] already in DOT_DTYPE; with CAUSAL, row i only sees
    positions ``<= qpos[i]``.
    """
    for start in range(kv_start, kv_end, BLOCK_N):
        pos = start + tl.arange(0, BLOCK_N)
        pos_valid = pos < kv_end
        k = _load_kv_tile(k_cache_ptr, bt_row_ptr, pos, pos_valid, kvh, d, d_valid,
                          stride_kb, stride_ks, stride_kh, stride_kd, BLOCK_SIZE)
        s = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=DOT_PRECISION) * scale_log2
        visible = pos_valid[None, :]
        if CAUSAL:
            visible = visible & (pos[None, :] <= qpos[:, None])
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_kv_tile(v_cache_ptr, bt_row_ptr, pos, pos_valid, kvh, d, d_valid,
                          stride_vb, stride_vs, stride_vh, stride_vd, BLOCK_SIZE)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), input_precision=DOT_PRECISION)
        m_i = m_new
    return m_i, l_i, acc


# --------------------------------------------------------------------------- prefill chunks

@triton.jit
def _prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, block_tables_ptr, qsl_ptr, seq_lens_ptr,
    scale_log2,
    stride_qt, stride_qh, stride_qd,
    stride_ot, stride_oh, stride_od,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_bt, head_dim,
    GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Program (tile, kv head, seq): BLOCK_M // GROUP query tokens x GROUP heads of a q_len >= 2 sequence."""
    TOKENS: tl.constexpr = BLOCK_M // GROUP
    tile = tl.program_id(0)
    kvh = tl.program_id(1)
    seq = tl.program_id(2)
    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    if q_len < 2:  # decodes belong to _decode_kernel
        return
    if tile * TOKENS >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    ctx_len = seq_len - q_len  # cached prefix ahead of this chunk

    r = tl.arange(0, BLOCK_M)
    tok = tile * TOKENS + r // GROUP
    head = kvh * GROUP + r % GROUP
    row_valid = (r < TOKENS * GROUP) & (tok < q_len)  # GROUP need not divide BLOCK_M
    d = tl.arange(0, BLOCK_D)
    d_valid = d < head_dim
    io_mask = row_valid[:, None] & d_valid[None, :]
    row = (q_start + tok).to(tl.int64)

    q = tl.load(q_ptr + row[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :] * stride_qd,
                mask=io_mask, other=0.0)
    # The reference casts q to the cache dtype before the product; do the same.
    q = q.to(k_cache_ptr.dtype.element_ty).to(DOT_DTYPE)

    m_i = tl.full([BLOCK_M], _NEG_INIT, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    qpos = ctx_len + tok
    # The tile's last token sees keys up to ctx_len + its index; nothing beyond.
    kv_end = tl.minimum(seq_len, ctx_len + (tile + 1) * TOKENS)
    m_i, l_i, acc = _attend_range(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, block_tables_ptr + seq.to(tl.int64) * stride_bt, kvh,
        0, kv_end, qpos, d, d_valid, scale_log2,
        stride_kb, stride_ks, stride_kh, stride_kd, stride_vb, stride_vs, stride_vh, stride_vd,
        True, BLOCK_SIZE, BLOCK_N, DOT_DTYPE, DOT_PRECISION)

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # padding rows have l_i == 0
    tl.store(out_ptr + row[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :] * stride_od,
             out.to(out_ptr.dtype.element_ty), mask=io_mask)


# --------------------------------------------------------------------------- decodes (split-K)

@triton.jit
def _decode_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr,
    block_tables_ptr, qsl_ptr, seq_lens_ptr,
    scale_log2,
    stride_qt, stride_qh, stride_qd,
    stride_ot, stride_oh, stride_od,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_bt, head_dim, num_heads, num_splits, split_size,
    GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    SINGLE_SPLIT: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Program (seq, kv head, split): the GROUP heads of a q_len == 1 sequence over one KV chunk.

    Writes the chunk's unnormalized acc and its (max, sum) into the partial
    buffers ([seq, head, split, ...]), or the final output when SINGLE_SPLIT.
    An empty chunk (past seq_len) writes max=-1e30, sum=0, acc=0, which the
    reduce weighs to zero.
    """
    seq = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    q_start = tl.load(qsl_ptr + seq)
    if tl.load(qsl_ptr + seq + 1) - q_start != 1:  # prefill chunks belong to _prefill_kernel
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    kv_start = split * split_size
    kv_end = tl.minimum(seq_len, kv_start + split_size)

    g = tl.arange(0, BLOCK_G)
    head = kvh * GROUP + g
    g_valid = g < GROUP
    d = tl.arange(0, BLOCK_D)
    d_valid = d < head_dim
    io_mask = g_valid[:, None] & d_valid[None, :]
    q = tl.load(q_ptr + q_start.to(tl.int64) * stride_qt + head[:, None] * stride_qh + d[None, :] * stride_qd,
                mask=io_mask, other=0.0)
    q = q.to(k_cache_ptr.dtype.element_ty).to(DOT_DTYPE)

    m_i = tl.full([BLOCK_G], _NEG_INIT, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    m_i, l_i, acc = _attend_range(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, block_tables_ptr + seq.to(tl.int64) * stride_bt, kvh,
        kv_start, kv_end, g, d, d_valid, scale_log2,
        stride_kb, stride_ks, stride_kh, stride_kd, stride_vb, stride_vs, stride_vh, stride_vd,
        False, BLOCK_SIZE, BLOCK_N, DOT_DTYPE, DOT_PRECISION)

    if SINGLE_SPLIT:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + q_start.to(tl.int64) * stride_ot + head[:, None] * stride_oh + d[None, :] * stride_od,
                 out.to(out_ptr.dtype.element_ty), mask=io_mask)
    else:
        part = (seq.to(tl.int64) * num_heads + head) * num_splits + split  # [BLOCK_G] row ids
        tl.store(part_m_ptr + part, m_i, mask=g_valid)
        tl.store(part_l_ptr + part, l_i, mask=g_valid)
        tl.store(part_acc_ptr + part[:, None] * BLOCK_D + d[None, :], acc, mask=io_mask)


@triton.jit
def _decode_reduce_kernel(
    out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, qsl_ptr,
    stride_ot, stride_oh, stride_od,
    head_dim, num_heads, num_splits,
    BLOCK_SPLITS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Program (seq, head): merge the per-split partials of one decode row into its output.

    out = sum_i 2^(m_i - M) acc_i / sum_i 2^(m_i - M) l_i with M = max_i m_i.
    """
    seq = tl.program_id(0)
    head = tl.program_id(1)
    q_start = tl.load(qsl_ptr + seq)
    if tl.load(qsl_ptr + seq + 1) - q_start != 1:
        return
    sp = tl.arange(0, BLOCK_SPLITS)
    sp_valid = sp < num_splits
    part = (seq.to(tl.int64) * num_heads + head) * num_splits + sp
    m = tl.load(part_m_ptr + part, mask=sp_valid, other=float("-inf"))
    l = tl.load(part_l_ptr + part, mask=sp_valid, other=0.0)
    d = tl.arange(0, BLOCK_D)
    d_valid = d < head_dim
    acc = tl.load(part_acc_ptr + part[:, None] * BLOCK_D + d[None, :],
                  mask=sp_valid[:, None] & d_valid[None, :], other=0.0)
    w = tl.exp2(m - tl.max(m, 0))  # split 0 is never empty, so the max is finite
    total = tl.sum(w * l, 0)
    out = tl.sum(w[:, None] * acc, 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + q_start.to(tl.int64) * stride_ot + head * stride_oh + d * stride_od,
             out.to(out_ptr.dtype.element_ty), mask=d_valid)


# --------------------------------------------------------------------------- launcher

def _dot_config(cache_dtype: torch.dtype) -> tuple[tl.dtype, str]:
    """Operand dtype and precision for tl.dot.

    fp32 caches use IEEE products (TF32 would miss a 1e-4 tolerance). Triton's
    interpreter multiplies bf16 tiles as raw uint16 bit patterns, so there the
    bf16 operands are upcast to fp32 first; on GPU they stay bf16.
    """
    native = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[cache_dtype]
    if native == tl.bfloat16 and isinstance(_prefill_kernel, InterpretedFunction):
        return tl.float32, "ieee"
    return native, "ieee" if native == tl.float32 else "tf32"


def default_split_size(num_decodes: int, num_kv_heads: int, max_seq_len: int, device: torch.device) -> int:
    """Split-K chunk (power of two tokens) so the decode grid has about two programs per SM.

    Many sequences fill the GPU on their own and get one split; a few long ones
    get split into chunks of at least _MIN_SPLIT tokens.
    """
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    splits = max(1, triton.cdiv(2 * sms, max(1, num_decodes * num_kv_heads)))
    return max(_MIN_SPLIT, triton.next_power_of_2(triton.cdiv(max(1, max_seq_len), splits)))


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_tables: torch.Tensor, query_start_loc: torch.Tensor,
                    seq_lens: torch.Tensor, scale: float, *, split_size: int | None = None,
                    max_q_len: int | None = None, max_seq_len: int | None = None) -> torch.Tensor:
    """Varlen paged attention for decodes and prefill chunks. See ``reference.paged_attention``.

    Keyword-only extras beyond the reference signature:

    * ``split_size`` (a power of two >= 16, in tokens) overrides the decode
      split-K chunk, mainly so tests can force many splits on short contexts.
    * ``max_q_len`` / ``max_seq_len``: upper bounds on the batch's chunk and
      sequence lengths. The grids are sized from them; without both, the call
      reads the exact values back from the device (one host sync, which also
      rules out CUDA-graph capture).
    """
    num_tokens, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads is not a multiple of {num_kv_heads} kv heads")
    if block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if split_size is not None and (split_size < _MIN_DOT or split_size & (split_size - 1)):
        raise ValueError(f"split_size must be a power of two >= {_MIN_DOT}, got {split_size}")
    group = num_heads // num_kv_heads
    device = q.device
    out = torch.empty_like(q)
    num_seqs = seq_lens.numel()
    if num_tokens == 0 or num_seqs == 0:
        return out
    query_start_loc = query_start_loc.to(device).contiguous()
    seq_lens = seq_lens.to(device).contiguous()
    block_tables = block_tables.to(device)
    if block_tables.stride(1) != 1:  # kernels index a table row as a flat array
        block_tables = block_tables.contiguous()

    if max_q_len is None or max_seq_len is None:
        # One host sync: longest chunk, number of decodes, longest decode context.
        q_lens = query_start_loc[1:] - query_start_loc[:-1]
        is_decode = q_lens == 1
        max_q_len, num_decodes, max_decode_len = torch.stack([
            q_lens.max(), is_decode.sum(), torch.where(is_decode, seq_lens, 0).max(),
        ]).long().tolist()
    else:
        # Bounds only: any sequence may be a decode (its programs return at once if
        # not), unless all num_tokens rows are needed for max_q_len >= 2 rows each.
        no_decodes = max_q_len >= 2 and num_tokens == num_seqs * max_q_len
        num_decodes, max_decode_len = (0, 0) if no_decodes else (num_seqs, max_seq_len)

    dot_dtype, precision = _dot_config(k_cache.dtype)
    block_d = max(_MIN_DOT, triton.next_power_of_2(head_dim))
    common = dict(
        scale_log2=scale * math.log2(math.e),
        stride_qt=q.stride(0), stride_qh=q.stride(1), stride_qd=q.stride(2),
        stride_ot=out.stride(0), stride_oh=out.stride(1), stride_od=out.stride(2),
        stride_kb=k_cache.stride(0), stride_ks=k_cache.stride(1), stride_kh=k_cache.stride(2),
        stride_kd=k_cache.stride(3),
        stride_vb=v_cache.stride(0), stride_vs=v_cache.stride(1), stride_vh=v_cache.stride(2),
        stride_vd=v_cache.stride(3),
        stride_bt=block_tables.stride(0), head_dim=head_dim,
        GROUP=group, BLOCK_SIZE=block_size, BLOCK_D=block_d,
        DOT_DTYPE=dot_dtype, DOT_PRECISION=precision,
    )

    if max_q_len >= 2:
        block_m = max(64, triton.next_power_of_2(group))
        tokens_per_tile = block_m // group
        grid = (triton.cdiv(max_q_len, tokens_per_tile), num_kv_heads, num_seqs)
        _prefill_kernel[grid](
            q, k_cache, v_cache, out, block_tables, query_start_loc, seq_lens,
            # fp32 or wide heads: halve the KV tile to stay within shared memory.
            BLOCK_M=block_m,
            BLOCK_N=64 if block_d <= 128 and k_cache.element_size() <= 2 else 32, num_warps=4, num_stages=2,
            **common)

    if num_decodes:
        if split_size is None:
            split_size = default_split_size(num_decodes, num_kv_heads, max_decode_len, device)
        num_splits = max(1, triton.cdiv(max_decode_len, split_size))
        single = num_splits == 1
        # Partials, one row per (seq, head, split): max and sum, and a BLOCK_D accumulator.
        # A single split writes the output directly and leaves them untouched.
        part_rows = 1 if single else num_seqs * num_heads * num_splits
        part_m = torch.empty(part_rows, dtype=torch.float32, device=device)
        part_l = torch.empty_like(part_m)
        part_acc = torch.empty(part_rows, block_d, dtype=torch.float32, device=device)
        _decode_kernel[(num_seqs, num_kv_heads, num_splits)](
            q, k_cache, v_cache, out, part_acc, part_m, part_l, block_tables, query_start_loc, seq_lens,
            num_heads=num_heads, num_splits=num_splits, split_size=split_size,
            BLOCK_G=max(_MIN_DOT, triton.next_power_of_2(group)), BLOCK_N=min(64, split_size),
            SINGLE_SPLIT=single, num_warps=4, num_stages=2,
            **common)
        if not single:
            _decode_reduce_kernel[(num_seqs, num_heads)](
                out, part_acc, part_m, part_l, query_start_loc,
                out.stride(0), out.stride(1), out.stride(2),
                head_dim, num_heads, num_splits,
                BLOCK_SPLITS=triton.next_power_of_2(num_splits), BLOCK_D=block_d,
                num_warps=4)
    return out
