"""The plain-torch reference against attention written out per sequence and head (no paging, no batching)."""

from __future__ import annotations

import torch

from tether.kernels import reference
from test_triton_vs_reference import _paged_batch


def _dense(q, k_cache, v_cache, block_tables, qsl, seq_lens, scale):
    out = torch.empty_like(q)
    bs, kvh = k_cache.shape[1], k_cache.shape[2]
    group = q.shape[1] // kvh
    for s, n in enumerate(seq_lens.tolist()):
        slots = [int(block_tables[s, p // bs]) * bs + p % bs for p in range(n)]
        k = k_cache.flatten(0, 1)[slots]  # [n, kvh, D]
        v = v_cache.flatten(0, 1)[slots]
        start, end = int(qsl[s]), int(qsl[s + 1])
        for j, row in enumerate(range(start, end)):
            pos = n - (end - start) + j  # this query's position: it sees keys 0..pos
            for h in range(q.shape[1]):
                w = torch.softmax((k[:pos + 1, h // group] @ q[row, h]) * scale, dim=0)
                out[row, h] = w @ v[:pos + 1, h // group]
    return out


def test_skewed_decodes_and_chunks_match_dense():
    # Decode lengths far apart land in separate padded groups; two prefill chunks ride along.
    q_lens = [1, 1, 7, 1, 1, 1, 5, 1]
    seq_lens = [300, 9, 7, 140, 1, 75, 40, 290]
    args = _paged_batch(q_lens, seq_lens, block_size=16, group=3, head_dim=32, device="cpu")
    assert [len(g) for g in reference._length_groups([0, 1, 3, 4, 5, 7], seq_lens)] == [2, 2, 1, 1]
    got = reference.paged_attention(*args, 0.2)
    torch.testing.assert_close(got, _dense(*args, 0.2), atol=1e-5, rtol=1e-5)


def test_decode_only_groups_match_dense():
    args = _paged_batch([1] * 5, [1000, 20, 510, 3, 999], block_size=16, group=2, head_dim=16, device="cpu")
    torch.testing.assert_close(reference.paged_attention(*args, 0.25), _dense(*args, 0.25), atol=1e-5, rtol=1e-5)


def test_rows_at_explicit_gapped_positions_match_the_dense_rows():
    # A prefill whose middle was placed from elsewhere: 150 leading rows, then every third position, then the
    # tail. More rows than one run of POSITION_RUN_ROWS, so runs with different key ranges are exercised.
    n = 400
    q_full, k_cache, v_cache, tables, _, lens = _paged_batch([n], [n], block_size=16, group=3, head_dim=32,
                                                             device="cpu")
    full = _dense(q_full, k_cache, v_cache, tables, torch.tensor([0, n], dtype=torch.int32), lens, 0.2)
    positions = torch.tensor(list(range(150)) + list(range(150, 380, 3)) + list(range(380, n)))
    assert len(positions) > reference.POSITION_RUN_ROWS
    q = q_full[positions]
    got = reference.paged_attention(q, k_cache, v_cache, tables, torch.tensor([0, len(positions)], dtype=torch.int32),
                                    lens, 0.2, query_positions=positions)
    torch.testing.assert_close(got, full[positions], atol=1e-5, rtol=1e-5)
