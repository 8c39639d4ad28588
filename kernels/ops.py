"""Public ops and their dispatch: Triton on CUDA tensors, the torch reference on CPU (decode
attention there from a small C kernel, ``cpu_decode.py``, when a compiler is at hand).

``TETHER_KERNELS=triton`` or ``TETHER_KERNELS=torch`` forces one backend (on a
CPU, ``triton`` runs the kernels in Triton's interpreter).
"""

from __future__ import annotations

import os

import torch

from tether.kernels import cpu_decode, reference


def backend_for(t: torch.Tensor) -> str:
    """Which backend serves an op on tensor ``t``: "triton" or "torch"."""
    forced = os.environ.get("TETHER_KERNELS", "").strip().lower()
    if forced in ("triton", "torch"):
        return forced
    if forced:
        raise ValueError(f"TETHER_KERNELS={forced!r}: use 'triton' or 'torch'")
    return "triton" if t.is_cuda else "torch"


def _forced_torch() -> bool:
    """``TETHER_KERNELS=torch``: the plain-torch reference for every op (no C decode kernel either)."""
    return os.environ.get("TETHER_KERNELS", "").strip().lower() == "torch"


def _triton():
    if not torch.cuda.is_available():
        # Kernels decorated under the interpreter run on CPU tensors.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from tether.kernels import triton_ops
    return triton_ops


def store_kv(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Write new K/V rows into their slots. See ``reference.store_kv``."""
    impl = _triton() if backend_for(key) == "triton" else reference
    impl.store_kv(key, value, k_cache, v_cache, slot_mapping)


def paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale, *,
                    max_q_len: int | None = None, max_seq_len: int | None = None,
                    query_positions=None):
    """Varlen paged attention for decodes and prefill chunks. See ``reference.paged_attention``.

    ``max_q_len`` / ``max_seq_len``, when known on the host, spare the Triton
    kernels a device read-back; the reference does not need them.
    ``query_positions`` (rows at explicit, possibly gapped positions: the few tokens
    recomputed after a KV placement) always takes the reference: the Triton kernel
    derives positions from contiguous chunks.
    """
    if query_positions is not None:
        return reference.paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
                                         query_positions)
    if backend_for(q) == "triton":
        return _triton().paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale,
                                         max_q_len=max_q_len, max_seq_len=max_seq_len)
    if not _forced_torch() and cpu_decode.available(q, k_cache):  # decode rows read the cache in place
        return cpu_decode.paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale)
    return reference.paged_attention(q, k_cache, v_cache, block_tables, query_start_loc, seq_lens, scale)


def rope_shift(k_cache, slots, deltas, inv_freq) -> None:
    """Move cached keys by per-token position deltas. See ``reference.rope_shift``."""
    impl = _triton() if backend_for(k_cache) == "triton" else reference
    impl.rope_shift(k_cache, slots, deltas, inv_freq)


def copy_blocks(src, dst, src_ids, dst_ids) -> None:
    """Copy blocks between pools (device/host tiers, copy-on-write). See ``reference.copy_blocks``.

    The Triton kernel needs both pools on one device; a cross-device (tier) copy
    always takes the reference, whatever TETHER_KERNELS says.
    """
    same_device = src.device == dst.device
    impl = _triton() if same_device and backend_for(src) == "triton" else reference
    impl.copy_blocks(src, dst, src_ids, dst_ids)
