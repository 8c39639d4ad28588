"""PackedLinear: fused projections (oneDNN-packed on CPU) equal the separate nn.Linear layers."""

from __future__ import annotations

import pytest
import torch

from tether.engine.linear import PackedLinear


def _layers(bias: list[bool], dtype=torch.float32) -> list[torch.nn.Linear]:
    torch.manual_seed(0)
    return [torch.nn.Linear(48, n, bias=b).to(dtype) for n, b in zip((32, 16, 16), bias)]


@pytest.mark.parametrize("bias", [[False, False, False], [True, True, True], [False, True, False]])
@pytest.mark.parametrize("rows", [1, 3, 16, 100])
def test_fused_equals_separate(bias, rows):
    layers = _layers(bias)
    x = torch.randn(rows, 48)
    with torch.inference_mode():
        want = torch.cat([m(x) for m in layers], dim=-1)
        fused = PackedLinear(layers)
        got = fused(x)
        again = torch.cat([m(x) for m in layers], dim=-1)  # modules now read the fused storage
    assert got.shape == want.shape == (rows, 64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, want)
    assert fused.out_features == [32, 16, 16]
    assert layers[1].weight.data_ptr() == fused.weight[32:48].data_ptr()  # one copy, not two


def test_packed_on_cpu_and_plain_path_for_other_dtypes():
    packed = PackedLinear(_layers([True, False, False]))
    assert packed._packed is not None  # fp32 on CPU runs through oneDNN
    layers = _layers([True, False, False], dtype=torch.float16)  # not packable here: F.linear
    plain = PackedLinear(layers)
    assert plain._packed is None
    x = torch.randn(5, 48, dtype=torch.float16)
    with torch.inference_mode():
        torch.testing.assert_close(plain(x), torch.cat([m(x) for m in layers], -1))


def test_non_contiguous_input_and_empty_batch():
    layers = _layers([False, False, False])
    fused = PackedLinear(layers)
    x = torch.randn(7, 96)[:, ::2]
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), torch.cat([m(x) for m in layers], -1), rtol=1e-5, atol=1e-5)
        assert fused(torch.randn(0, 48)).shape == (0, 64)


def test_built_under_inference_mode_keeps_the_modules_usable():
    layers = _layers([True, True, True])
    x = torch.randn(2, 48)
    with torch.inference_mode():
        PackedLinear(layers)
    assert not layers[0].weight.is_inference()
    y = layers[0](x)  # grad mode: would raise if the weight were an inference tensor
    assert y.requires_grad
