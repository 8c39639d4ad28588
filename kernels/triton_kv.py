"""Triton kernels that move or rewrite KV-cache rows: ``store_kv``, ``rope_shift``, ``copy_blocks``.

Semantics are those of ``tether.kernels.reference``. Cache layout per layer is
``[num_blocks, block_size, num_kv_heads, head_dim]`` and slot = block * block_size + offset.
Every kernel takes explicit strides, so views (e.g. K sliced out of a fused QKV
projection) need no copy. Block and slot indices are widened to int64 before
they multiply a stride: a large pool overflows int32 offsets.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _check_same_device(*tensors: torch.Tensor) -> None:
    """Data tensors must share a device; small index tensors are moved by the callers instead."""
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"Triton kernels need all tensors on one device, got {sorted(map(str, devices))}")


# --------------------------------------------------------------------------- store_kv

@triton.jit
def _store_kv_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    stride_kt, stride_kh, stride_kd,
    stride_vt, stride_vh, stride_vd,
    stride_kcb, stride_kcs, stride_kch, stride_kcd,
    stride_vcb, stride_vcs, stride_vch, stride_vcd,
    num_kv_heads, head_dim,
    BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program per new token: copy its [kv_heads, head_dim] K and V rows into its slot."""
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot < 0:  # padding row
        return
    blk = slot // BLOCK_SIZE
    off = slot % BLOCK_SIZE
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < num_kv_heads) & (d < head_dim)
    t64 = t.to(tl.int64)

    k = tl.load(key_ptr + t64 * stride_kt + h * stride_kh + d * stride_kd, mask=mask)
    tl.store(k_cache_ptr + blk * stride_kcb + off * stride_kcs + h * stride_kch + d * stride_kcd,
             k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    v = tl.load(value_ptr + t64 * stride_vt + h * stride_vh + d * stride_vd, mask=mask)
    tl.store(v_cache_ptr + blk * stride_vcb + off * stride_vcs + h * stride_vch + d * stride_vcd,
             v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
             v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write rows ``key[i]``/``value[i]`` ([T, kv_heads, head_dim]) into slot ``slot_mapping[i]``.

    A negative slot skips the row. See ``reference.store_kv``.
    """
    _check_same_device(key, value, k_cache, v_cache)
    num_tokens, num_kv_heads, head_dim = key.shape
    if num_tokens == 0:
        return
    _store_kv_kernel[(num_tokens,)](
        key, value, k_cache, v_cache, slot_mapping.to(k_cache.device).contiguous(),
        *key.stride(), *value.stride(), *k_cache.stride(), *v_cache.stride(),
        num_kv_heads, head_dim,
        BLOCK_SIZE=k_cache.shape[1],
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_D=triton.next_power_of_2(head_dim),
    )


# --------------------------------------------------------------------------- rope_shift

@triton.jit
def _rope_shift_kernel(
    k_cache_ptr, slot_ptr, delta_ptr, inv_freq_ptr,
    stride_b, stride_s, stride_h, stride_d,
    num_kv_heads, half_dim,
    BLOCK_SIZE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    """One program per slot: rotate all heads of one cached key by ``delta`` positions, in fp32.

    With the rotate_half convention the pair (x[i], x[i + D/2]) rotates by angle
    delta * inv_freq[i]: lo' = lo*cos - hi*sin, hi' = hi*cos + lo*sin.
    """
    i = tl.program_id(0)
    slot = tl.load(slot_ptr + i).to(tl.int64)
    if slot < 0:  # padding row
        return
    delta = tl.load(delta_ptr + i).to(tl.float32)
    j = tl.arange(0, BLOCK_HALF)
    w = tl.load(inv_freq_ptr + j, mask=j < half_dim, other=0.0).to(tl.float32)
    angle = delta * w
    cos = tl.cos(angle)[None, :]
    sin = tl.sin(angle)[None, :]

    h = tl.arange(0, BLOCK_H)[:, None]
    mask = (h < num_kv_heads) & (j[None, :] < half_dim)
    base = k_cache_ptr + (slot // BLOCK_SIZE) * stride_b + (slot % BLOCK_SIZE) * stride_s + h * stride_h
    lo_ptr = base + j[None, :] * stride_d
    hi_ptr = base + (j[None, :] + half_dim) * stride_d
    lo = tl.load(lo_ptr, mask=mask).to(tl.float32)
    hi = tl.load(hi_ptr, mask=mask).to(tl.float32)
    out_ty = k_cache_ptr.dtype.element_ty
    tl.store(lo_ptr, (lo * cos - hi * sin).to(out_ty), mask=mask)
    tl.store(hi_ptr, (hi * cos + lo * sin).to(out_ty), mask=mask)


def rope_shift(k_cache: torch.Tensor, slots: torch.Tensor, deltas: torch.Tensor,
               inv_freq: torch.Tensor) -> None:
    """Rotate cached keys in place: the key in ``slots[i]`` moves by ``deltas[i]`` positions.

    See ``reference.rope_shift``. Slots should be distinct (each is rewritten
    from its own old value); a negative slot is skipped.
    """
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    if head_dim % 2 or inv_freq.numel() != head_dim // 2:
        raise ValueError(f"inv_freq must have head_dim/2 = {head_dim // 2} entries, got {inv_freq.numel()}")
    n = slots.numel()
    if n == 0:
        return
    _rope_shift_kernel[(n,)](
        k_cache, *(t.to(k_cache.device).contiguous() for t in (slots, deltas, inv_freq)),
        *k_cache.stride(),
        num_kv_heads, head_dim // 2,
        BLOCK_SIZE=k_cache.shape[1],
        BLOCK_H=triton.next_power_of_2(num_kv_heads),
        BLOCK_HALF=triton.next_power_of_2(head_dim // 2),
    )


# --------------------------------------------------------------------------- copy_blocks

@triton.jit
def _copy_blocks_kernel(
    src_ptr, dst_ptr, src_ids_ptr, dst_ids_ptr,
    src_stride_b, dst_stride_b, block_numel,
    CHUNK: tl.constexpr,
):
    """Program (i, c) copies chunk ``c`` of block ``src_ids[i]`` into block ``dst_ids[i]``."""
    i = tl.program_id(0)
    c = tl.program_id(1)
    src_blk = tl.load(src_ids_ptr + i).to(tl.int64)
    dst_blk = tl.load(dst_ids_ptr + i).to(tl.int64)
    offs = c * CHUNK + tl.arange(0, CHUNK)
    mask = offs < block_numel
    x = tl.load(src_ptr + src_blk * src_stride_b + offs, mask=mask)
    tl.store(dst_ptr + dst_blk * dst_stride_b + offs, x.to(dst_ptr.dtype.element_ty), mask=mask)


_COPY_CHUNK = 4096  # elements per program: a 16x8x128 block is 4 programs


def copy_blocks(src: torch.Tensor, dst: torch.Tensor, src_ids: torch.Tensor,
                dst_ids: torch.Tensor) -> None:
    """Copy whole blocks ``src[src_ids[i]]`` into ``dst[dst_ids[i]]``; both pools on one device.

    Each block must be contiguous inside its pool (the leading block dim may be
    strided). Cross-device copies are the reference's job; ``ops`` routes them there.
    """
    _check_same_device(src, dst)
    if src.shape[1:] != dst.shape[1:]:
        raise ValueError(f"block shapes differ: {tuple(src.shape[1:])} vs {tuple(dst.shape[1:])}")
    if not (src[0].is_contiguous() and dst[0].is_contiguous()):
        raise ValueError("copy_blocks needs each block contiguous within its pool")
    if src_ids.numel() != dst_ids.numel():
        raise ValueError(f"{src_ids.numel()} source ids but {dst_ids.numel()} destination ids")
    n = src_ids.numel()
    if n == 0:
        return
    block_numel = src[0].numel()
    chunk = min(_COPY_CHUNK, triton.next_power_of_2(block_numel))
    grid = (n, triton.cdiv(block_numel, chunk))
    _copy_blocks_kernel[grid](
        src, dst, src_ids.to(src.device).contiguous(), dst_ids.to(src.device).contiguous(),
        src.stride(0), dst.stride(0), block_numel,
        CHUNK=chunk,
    )
