"""``tether.kernels.ops`` picks the backend per call; TETHER_KERNELS is set per test with monkeypatch."""

from __future__ import annotations

import pytest
import torch

from tether.kernels import ops, reference, triton_ops


def _spy(seen: list, tag: tuple, real):
    def wrapper(*args, **kwargs):
        seen.append(tag)
        return real(*args, **kwargs)
    return wrapper


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, str]]:
    """(backend, op) for every copy_blocks / paged_attention call that reaches an implementation."""
    seen = []
    for mod, backend in ((reference, "reference"), (triton_ops, "triton")):
        for op in ("copy_blocks", "paged_attention"):
            monkeypatch.setattr(mod, op, _spy(seen, (backend, op), getattr(mod, op)))
    return seen


@pytest.mark.parametrize("forced", ["", "triton", "torch", " Triton "])
def test_copy_blocks_dispatch_same_device(monkeypatch, calls, device, forced):
    monkeypatch.setenv("TETHER_KERNELS", forced)
    expected = "reference" if forced == "torch" or (not forced and device.type != "cuda") else "triton"
    src, dst = torch.randn(3, 16, 2, 8, device=device), torch.zeros(3, 16, 2, 8, device=device)
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


def test_forced_triton_paged_attention(monkeypatch, calls, device):
    monkeypatch.setenv("TETHER_KERNELS", "triton")
    k_cache, v_cache = torch.randn(4, 16, 1, 64, device=device), torch.randn(4, 16, 1, 64, device=device)
    q = torch.randn(4, 2, 64, device=device)
    ints = dict(dtype=torch.int32, device=device)
    args = (q, k_cache, v_cache, torch.tensor([[3, 1], [0, 2]], **ints),
            torch.tensor([0, 1, 4], **ints), torch.tensor([20, 19], **ints), 0.125)
    got = ops.paged_attention(*args)
    assert calls == [("triton", "paged_attention")]
    torch.testing.assert_close(got, reference.paged_attention(*args), atol=1e-4, rtol=1e-4)
