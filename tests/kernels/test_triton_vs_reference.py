"""Each Triton kernel against its plain-torch reference on small randomized shapes."""

from __future__ import annotations

import pytest
import torch

from tether.kernels import reference, triton_ops

TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _paged_batch(q_lens, seq_lens, *, block_size, group, head_dim, device, num_kv_heads=2,
                 dtype=torch.float32, spare_blocks=3):
    """Random q, caches and block tables for a varlen batch; blocks are shuffled across sequences."""
    num_heads = num_kv_heads * group
    need = [(n + block_size - 1) // block_size for n in seq_lens]
    num_blocks = sum(need) + spare_blocks
    k_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, device=device).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, num_kv_heads, head_dim, device=device).to(dtype)
    perm = torch.randperm(num_blocks).tolist()
    # Unused table entries point at a real block with garbage in it: kernels must not read them.
    block_tables = torch.full((len(seq_lens), max(need) + 1), perm[-1], dtype=torch.int32)
    taken = 0
    for s, n in enumerate(need):
        block_tables[s, :n] = torch.tensor(perm[taken:taken + n])
        taken += n
    qsl = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(qsl[-1]), num_heads, head_dim, device=device).to(dtype)
    return (q, k_cache, v_cache, block_tables.to(device), qsl.to(device),
            torch.tensor(seq_lens, dtype=torch.int32, device=device))


# (q_lens, seq_lens, block_size, group, head_dim, split_size). Lengths are ragged
# and cross block boundaries; small split sizes force many split-K chunks,
# including chunks wholly past a short sequence's end.
ATTENTION_CASES = {
    "decode_only": ([1, 1, 1, 1], [1, 17, 50, 33], 16, 4, 64, None),
    "decode_splitk_g3_d128": ([1, 1, 1], [100, 7, 65], 32, 3, 128, 16),
    "decode_splitk_g1": ([1, 1], [129, 40], 16, 1, 64, 32),
    "prefill_empty_prefix_d128": ([20, 33, 5], [20, 33, 5], 16, 1, 128, None),
    "prefill_long_prefix_g4": ([12, 30], [90, 70], 32, 4, 64, None),
    "mixed_g3_splitk": ([1, 9, 1, 17], [40, 9, 70, 50], 16, 3, 64, 16),
    "mixed_empty_chunk_bs32": ([3, 0, 1, 2], [35, 6, 33, 64], 32, 4, 128, 32),
}


@pytest.mark.parametrize("case", list(ATTENTION_CASES), ids=list(ATTENTION_CASES))
def test_paged_attention(case, device):
    q_lens, seq_lens, block_size, group, head_dim, split_size = ATTENTION_CASES[case]
    args = _paged_batch(q_lens, seq_lens, block_size=block_size, group=group, head_dim=head_dim, device=device)
    scale = head_dim ** -0.5
    got = triton_ops.paged_attention(*args, scale, split_size=split_size)
    want = reference.paged_attention(*args, scale)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_paged_attention_half_dtypes(dtype, device):
    args = _paged_batch([1, 6, 1], [20, 22, 37], block_size=16, group=2, head_dim=64, device=device, dtype=dtype)
    got = triton_ops.paged_attention(*args, 0.125, split_size=16)
    want = reference.paged_attention(*args, 0.125)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, atol=TOL[dtype], rtol=TOL[dtype])


def test_paged_attention_strided_q(device):
    """q sliced out of a fused QKV buffer (row stride larger than heads * head_dim)."""
    q, k_cache, v_cache, bt, qsl, seq_lens = _paged_batch([1, 5], [18, 21], block_size=16, group=2,
                                                          head_dim=64, device=device)
    fused = torch.randn(q.shape[0], q.shape[1] + 4, q.shape[2], device=device)
    fused[:, :q.shape[1]] = q
    q_view = fused[:, :q.shape[1]]
    got = triton_ops.paged_attention(q_view, k_cache, v_cache, bt, qsl, seq_lens, 0.125)
    want = reference.paged_attention(q, k_cache, v_cache, bt, qsl, seq_lens, 0.125)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("q_lens,seq_lens,bounds", [
    ([1, 1, 1], [9, 40, 23], (1, 40)),     # decode-only, exact bounds
    ([1, 7, 1], [30, 7, 45], (16, 100)),   # mixed, loose bounds
    ([5, 5], [20, 5], (5, 20)),            # prefill-only, exact bounds: no decode launch
])
def test_paged_attention_length_bounds(q_lens, seq_lens, bounds, device):
    """Host-supplied upper bounds (no device sync) give the same result as the exact read-back."""
    args = _paged_batch(q_lens, seq_lens, block_size=16, group=2, head_dim=64, device=device)
    got = triton_ops.paged_attention(*args, 0.125, split_size=16, max_q_len=bounds[0], max_seq_len=bounds[1])
    torch.testing.assert_close(got, reference.paged_attention(*args, 0.125), atol=1e-4, rtol=1e-4)


def test_paged_attention_head_dim_not_power_of_two(device):
    args = _paged_batch([1, 11], [26, 40], block_size=16, group=2, head_dim=80, device=device)
    got = triton_ops.paged_attention(*args, 80 ** -0.5, split_size=16)
    torch.testing.assert_close(got, reference.paged_attention(*args, 80 ** -0.5), atol=1e-4, rtol=1e-4)


def test_paged_attention_rejects_bad_split_size(device):
    args = _paged_batch([1], [5], block_size=16, group=1, head_dim=64, device=device)
    with pytest.raises(ValueError, match="split_size"):
        triton_ops.paged_attention(*args, 0.125, split_size=24)


@pytest.mark.parametrize("block_size,cache_dtype", [(16, torch.float32), (32, torch.float16)])
def test_store_kv(block_size, cache_dtype, device):
    num_blocks, kv_heads, head_dim, tokens = 4, 3, 64, 11
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, device=device).to(cache_dtype)
    v_cache = torch.randn_like(k_cache)
    slots = torch.randperm(num_blocks * block_size)[:tokens]
    slots[[2, 7]] = -1  # padding rows are skipped
    slots = slots.to(device)
    # K and V as views into a fused [T, 2 * kv_heads, D] projection: strided rows.
    kv = torch.randn(tokens, 2 * kv_heads, head_dim, device=device)
    key, value = kv[:, :kv_heads], kv[:, kv_heads:]
    want_k, want_v = k_cache.clone(), v_cache.clone()
    reference.store_kv(key, value, want_k, want_v, slots)
    triton_ops.store_kv(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, want_k) and torch.equal(v_cache, want_v)


@pytest.mark.parametrize("block_size,head_dim,dtype", [(16, 64, torch.float32), (32, 128, torch.float32),
                                                       (16, 64, torch.bfloat16)])
def test_rope_shift(block_size, head_dim, dtype, device):
    num_blocks, kv_heads, n = 3, 2, 13
    k_cache = torch.randn(num_blocks, block_size, kv_heads, head_dim, device=device).to(dtype)
    slots = torch.randperm(num_blocks * block_size)[:n]
    slots[[3, 9]] = -1  # skipped rows
    slots = slots.to(device)
    deltas = torch.randint(-40, 40, (n,), device=device)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    want = k_cache.clone()
    reference.rope_shift(want, slots, deltas, inv_freq)
    triton_ops.rope_shift(k_cache, slots, deltas, inv_freq)
    torch.testing.assert_close(k_cache, want, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("src_dtype,dst_dtype", [(torch.float32, torch.float32), (torch.float32, torch.float16)])
def test_copy_blocks(src_dtype, dst_dtype, device):
    src = torch.randn(6, 16, 2, 64, device=device).to(src_dtype)
    dst = torch.randn(5, 16, 2, 64, device=device).to(dst_dtype)
    src_ids = torch.tensor([4, 0, 5], device=device)
    dst_ids = torch.tensor([1, 3, 0])  # ids may live on the host
    want = dst.clone()
    reference.copy_blocks(src, want, src_ids, dst_ids)
    triton_ops.copy_blocks(src, dst, src_ids, dst_ids)
    assert torch.equal(dst, want)
