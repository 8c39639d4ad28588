"""Our paged forward equals transformers' forward (tiny random-weight Llama, fp32)."""

from __future__ import annotations

import pytest
import torch

from tiny_model import tiny_llama
from engine_helpers import greedy, hf_greedy, hf_logits, make_core, req, run_all, tokens
from tether.engine import SamplingParams
from tether.engine.attention import AttentionMetadata
from tether.engine.model import PagedCausalLM

TOL = 1e-3


def _meta(chunks, tables, block_size):
    """chunks: list of (start, end) token ranges per sequence, written through tables."""
    slots, qsl, lens = [], [0], []
    for (start, end), table in zip(chunks, tables):
        slots += [table[p // block_size] * block_size + p % block_size for p in range(start, end)]
        qsl.append(qsl[-1] + end - start)
        lens.append(end)
    width = max(len(t) for t in tables)
    bt = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.int32)
    return AttentionMetadata(torch.tensor(slots), bt, torch.tensor(qsl, dtype=torch.int32),
                             torch.tensor(lens, dtype=torch.int32),
                             max(e - s for s, e in chunks), max(lens))


def _step(pm, kv, prompts, chunks, tables, bs=16):
    ids = torch.tensor([t for p, (s, e) in zip(prompts, chunks) for t in p[s:e]])
    pos = torch.tensor([q for s, e in chunks for q in range(s, e)])
    return pm.forward(ids, pos, _meta(chunks, tables, bs), kv)


@pytest.mark.parametrize("rope", [None, {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 64}])
def test_ragged_batch_with_chunked_prefill_matches_hf(rope):
    model = tiny_llama(seed=1, rope_scaling=rope, tie=rope is None)
    pm = PagedCausalLM(model)
    kv = pm.allocate_kv_cache(num_blocks=32, block_size=16)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 128, (n,), generator=g).tolist() for n in (37, 5, 50)]
    # Scattered, non-contiguous block tables.
    tables = [[9, 2, 17], [4], [11, 0, 30, 6]]
    # Step 1: chunks ending off block boundaries; step 2: the rest, over the cached prefix.
    first = [(0, 13), (0, 5), (0, 21)]
    second = [(13, 37), (5, 5), (21, 50)]
    out1 = _step(pm, kv, prompts, first, tables)
    keep = [i for i, (s, e) in enumerate(second) if e > s]
    out2 = _step(pm, kv, [prompts[i] for i in keep], [second[i] for i in keep], [tables[i] for i in keep])
    row1 = row2 = 0
    for i, p in enumerate(prompts):
        ref = hf_logits(model, p)
        s, e = first[i]
        torch.testing.assert_close(out1[row1:row1 + e - s], ref[s:e], atol=TOL, rtol=0)
        row1 += e - s
        if i in keep:
            s, e = second[i]
            torch.testing.assert_close(out2[row2:row2 + e - s], ref[s:e], atol=TOL, rtol=0)
            row2 += e - s


def test_decode_rows_mixed_with_prefill_match_hf(tiny_model):
    pm = PagedCausalLM(tiny_model)
    kv = pm.allocate_kv_cache(num_blocks=16, block_size=16)
    a = list(range(3, 40))   # 37 tokens: prefill 36, then decode the 37th
    b = list(range(50, 70))  # 20 tokens in one chunk, in the same step as a's decode
    tables = [[3, 7, 1], [5, 12]]
    _step(pm, kv, [a], [(0, 36)], [tables[0]])
    out = _step(pm, kv, [a, b], [(36, 37), (0, 20)], tables)
    torch.testing.assert_close(out[0], hf_logits(tiny_model, a)[36], atol=TOL, rtol=0)
    torch.testing.assert_close(out[1:], hf_logits(tiny_model, b), atol=TOL, rtol=0)


def test_greedy_equals_hf_generate_with_chunking_and_prefix_hits(tiny_model):
    gen = torch.Generator().manual_seed(3)
    shared = torch.randint(3, 128, (40,), generator=gen).tolist()
    prompts = [shared + torch.randint(3, 128, (n,), generator=gen).tolist() for n in (3, 17, 30, 1, 9)]
    core = make_core(tiny_model, num_kv_blocks=128, max_num_batched_tokens=24)
    core.add_request(req("warm", shared + [5], greedy(1)))
    run_all(core)
    for i, p in enumerate(prompts):
        core.add_request(req(str(i), p, greedy(64)))
    outs = run_all(core)
    for i, p in enumerate(prompts):
        assert tokens(outs[str(i)]) == hf_greedy(tiny_model, p, 64), f"prompt {i}"
        assert outs[str(i)][-1].metrics.prefix_hit_tokens == 32  # two full blocks of the shared text
    core.check_no_leaks()


def test_logprobs_after_prefix_hit_match_hf(tiny_model):
    """A request that starts from a prefix hit, prefilled in chunks: its first-token logprobs equal HF's."""
    p = list(range(3, 60))
    core = make_core(tiny_model, max_num_batched_tokens=20)
    core.add_request(req("a", p[:40], greedy(1)))
    run_all(core)
    core.add_request(req("b", p, greedy(1, logprobs=20)))
    out = run_all(core)["b"][-1]
    assert out.metrics.prefix_hit_tokens == 32
    ref = torch.log_softmax(hf_logits(tiny_model, p)[-1], -1)
    for tok, lp in out.logprobs[0].items():
        assert abs(lp - ref[tok].item()) < TOL
    assert set(out.logprobs[0]) >= set(ref.topk(20).indices.tolist())


def test_qwen2_style_bias_and_untied_head():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=256,
                      tie_word_embeddings=False, use_sliding_window=False)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.normal_(0, 0.1)
    p = list(range(1, 45))
    core = make_core(model, max_num_batched_tokens=16)
    core.add_request(req("q", p, greedy(20)))
    assert tokens(run_all(core)["q"]) == hf_greedy(model, p, 20)
