"""The C decode-attention kernel (kernels/cpu_decode.py) against the torch reference."""

from __future__ import annotations

import pytest
import torch

from tether.kernels import cpu_decode, ops, reference


def _case(seed, B, H, KVH, D, bs, lens, num_blocks=64):
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(num_blocks, bs, KVH, D, generator=g)
    vc = torch.randn(num_blocks, bs, KVH, D, generator=g)
    max_blocks = -(-max(lens) // bs)
    tables = torch.randperm(num_blocks, generator=g)[:B * max_blocks].reshape(B, max_blocks).int()
    return kc, vc, tables, torch.tensor(lens, dtype=torch.int32)


needs_kernel = pytest.mark.skipif(not cpu_decode.available(torch.zeros(1), torch.zeros(1)),
                                  reason="no C compiler on this machine")


@needs_kernel
@pytest.mark.parametrize("H, KVH, D, bs, lens", [
    (9, 3, 64, 16, [1, 17, 40, 33]),     # GQA as the default model, a 1-token context
    (4, 4, 24, 4, [5, 8, 9]),            # plain multi-head, odd head size, small blocks
    (8, 2, 32, 16, [130, 3]),            # lengths far apart in one batch
])
def test_decode_rows_match_the_reference(H, KVH, D, bs, lens):
    kc, vc, tables, seq_lens = _case(0, len(lens), H, KVH, D, bs, lens)
    q = torch.randn(len(lens), H, D)
    qsl = torch.arange(len(lens) + 1, dtype=torch.int32)
    want = reference.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.3)
    got = cpu_decode.decode_attention(q, kc, vc, tables, seq_lens, 0.3)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


@needs_kernel
def test_mixed_step_decodes_in_c_prefill_chunks_by_the_reference():
    lens = [20, 7, 33, 12]
    q_lens = [1, 7, 1, 5]  # sequence 1 is a whole prompt, sequence 3 a later chunk
    kc, vc, tables, seq_lens = _case(1, 4, 9, 3, 64, 16, lens)
    qsl = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(q_lens), 9, 64)
    want = reference.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.125)
    got = ops.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.125)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)


@needs_kernel
def test_tether_kernels_torch_keeps_every_row_on_the_reference(monkeypatch):
    kc, vc, tables, seq_lens = _case(2, 2, 9, 3, 64, 16, [9, 30])
    q = torch.randn(2, 9, 64)
    qsl = torch.arange(3, dtype=torch.int32)

    def refuse(*a, **k):
        raise AssertionError("the C kernel ran")
    monkeypatch.setattr(cpu_decode, "decode_attention", refuse)
    monkeypatch.setenv("TETHER_KERNELS", "torch")
    ops.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.125)
    monkeypatch.delenv("TETHER_KERNELS")
    with pytest.raises(AssertionError, match="the C kernel ran"):
        ops.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.125)


def test_a_failed_build_falls_back_to_the_reference(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_decode, "_lib", None)
    monkeypatch.setenv("TETHER_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    kc, vc, tables, seq_lens = _case(3, 2, 9, 3, 64, 16, [4, 19])
    q = torch.randn(2, 9, 64)
    qsl = torch.arange(3, dtype=torch.int32)
    assert not cpu_decode.available(q, kc)
    torch.testing.assert_close(ops.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.125),
                               reference.paged_attention(q, kc, vc, tables, qsl, seq_lens, 0.125))
    assert not list(tmp_path.rglob("*.so"))
