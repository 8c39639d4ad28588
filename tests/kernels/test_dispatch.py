"""``tether.kernels.ops`` picks the backend per call; TETHER_KERNELS is set per test with monkeypatch."""

from __future__ import annotations

import pytest
import torch

from tether.kernels import ops, reference, triton_ops


@pytest.fixture
def calls(monkeypatch):
    """Record which implementation serves copy_blocks / paged_attention."""
    seen = []
    for mod, name in ((reference, "reference"), (triton_ops, "triton")):
        for op in ("copy_blocks", "paged_attention"):
            real = getattr(mod, op)
            monkeypatch.setattr(mod, op, lambda *a, _real=real, _tag=(name, op), **k: (seen.append(_tag), _real(*a, **k))[1])
    return seen


@pytest.mark.parametrize("forced,expected", [("", "reference"), ("triton", "triton"), ("torch", "reference"),
                                             (" Triton ", "triton")])
def test_copy_blocks_dispatch_cpu(monkeypatch, calls, forced, expected):
    monkeypatch.setenv("TETHER_KERNELS", forced)
    src, dst = torch.randn(3, 16, 2, 8), torch.zeros(3, 16, 2, 8)
    ops.copy_blocks(src, dst, torch.tensor([2, 0]), torch.tensor([0, 1]))
    assert calls == [(expected, "copy_blocks")]
    assert torch.equal(dst[0], src[2]) and torch.equal(dst[1], src[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("forced", ["", "triton"])
def test_copy_blocks_cross_device_uses_reference(monkeypatch, calls, forced):
    monkeypatch.setenv("TETHER_KERNELS", forced)
    src, dst = torch.randn(3, 16, 2, 8, device="cuda"), torch.zeros(3, 16, 2, 8)
    ops.copy_blocks(src, dst, torch.tensor([1]), torch.tensor([2]))
    assert calls == [("reference", "copy_blocks")]
    assert torch.equal(dst[2], src[1].cpu())


def test_forced_triton_paged_attention(monkeypatch, calls):
    monkeypatch.setenv("TETHER_KERNELS", "triton")
    k_cache, v_cache = torch.randn(4, 16, 1, 64), torch.randn(4, 16, 1, 64)
    q = torch.randn(4, 2, 64)
    args = (q, k_cache, v_cache, torch.tensor([[3, 1], [0, 2]], dtype=torch.int32),
            torch.tensor([0, 1, 4], dtype=torch.int32), torch.tensor([20, 19], dtype=torch.int32), 0.125)
    got = ops.paged_attention(*args)
    assert calls == [("triton", "paged_attention")]
    torch.testing.assert_close(got, reference.paged_attention(*args), atol=1e-4, rtol=1e-4)
