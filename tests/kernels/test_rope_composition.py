"""rope_shift composed with RoPE: RoPE at p, then a shift by d, equals RoPE at p + d.

Checked for the reference and the Triton kernel, with plain inv_freq (base
10000) and Llama 3.1's scaled inv_freq.
"""

from __future__ import annotations

import math

import pytest
import torch

from tether.kernels import reference, triton_ops


def default_inv_freq(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def llama3_inv_freq(head_dim: int, base: float = 500000.0, factor: float = 8.0, low_freq_factor: float = 1.0,
                    high_freq_factor: float = 4.0, original_max_position: int = 8192) -> torch.Tensor:
    """Llama 3.1 RoPE scaling: long wavelengths divided by ``factor``, short ones kept, a smooth blend between."""
    inv_freq = default_inv_freq(head_dim, base)
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = original_max_position / low_freq_factor
    high_freq_wavelen = original_max_position / high_freq_factor
    smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, blended, scaled)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Standard (rotate_half) RoPE in fp32 on x [N, heads, D] at integer positions [N]."""
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    return x * emb.cos() + reference.rotate_half(x) * emb.sin()


def test_llama3_inv_freq_matches_transformers():
    """Our Llama 3 scaling agrees with transformers' where its config API is as expected."""
    try:
        from transformers import LlamaConfig
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        config = LlamaConfig(hidden_size=256, num_attention_heads=2, head_dim=128, max_position_embeddings=131072,
                             rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                                                  low_freq_factor=1.0, high_freq_factor=4.0,
                                                  original_max_position_embeddings=8192))
        theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    except (ImportError, KeyError, TypeError, ValueError) as e:  # API drift across transformers versions
        pytest.skip(f"transformers llama3 rope unavailable: {e}")
    torch.testing.assert_close(llama3_inv_freq(128), theirs.float(), atol=0, rtol=1e-6)


@pytest.mark.parametrize("impl", [reference, triton_ops], ids=["reference", "triton"])
@pytest.mark.parametrize("rope", ["default", "llama3"])
def test_shift_composes_with_rope(impl, rope, device):
    block_size, num_blocks, kv_heads, head_dim = 16, 4, 2, 128
    inv_freq = (default_inv_freq if rope == "default" else llama3_inv_freq)(head_dim).to(device)
    n = 24
    slots = torch.randperm(num_blocks * block_size)[:n].to(device)
    # Angles stay below ~100 rad, where fp32 rounding of pos * inv_freq stays within 1e-5.
    pos = torch.randint(0, 48, (n,), device=device)
    delta = torch.randint(-48, 48, (n,), device=device).clamp(min=-pos)  # shifts may move keys left
    raw = torch.randn(n, kv_heads, head_dim, device=device)

    k_cache = torch.zeros(num_blocks, block_size, kv_heads, head_dim, device=device)
    k_cache.view(-1, kv_heads, head_dim)[slots] = apply_rope(raw, pos, inv_freq)
    impl.rope_shift(k_cache, slots, delta, inv_freq)

    got = k_cache.view(-1, kv_heads, head_dim)[slots]
    torch.testing.assert_close(got, apply_rope(raw, pos + delta, inv_freq), atol=1e-5, rtol=1e-5)
