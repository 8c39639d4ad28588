"""Integration on the real default model (SmolLM2-135M-Instruct, converted from its GGUF)."""

from __future__ import annotations

import pytest
import torch

from engine_helpers import greedy, hf_logits, req, run_all, tokens
from tether.engine import Engine, EngineConfig, Request, SamplingParams, build_core
from tether.engine.engine import chat_prompt_ids

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain recursion to a child.",
    "List three uses of a paperclip.",
    "How do I reverse a list in Python?",
]


@pytest.fixture(scope="module")
def core(default_model):
    core = build_core(EngineConfig(num_kv_blocks=256, max_num_batched_tokens=40), default_model.hf_model,
                      default_model.tokenizer)
    return core


def _chat_ids(tokenizer, text):
    """The prompt the engine renders for one user message (the model's chat template)."""
    return chat_prompt_ids(tokenizer, [{"role": "user", "content": text}])


def test_logits_match_transformers_with_chunks_and_prefix_hit(default_model, core):
    hf = default_model.hf_model
    ids = _chat_ids(default_model.tokenizer, PROMPTS[2] + " Use an example about Russian dolls.")
    core.add_request(req("warm", ids[:33], greedy(1)))  # caches two full blocks
    run_all(core)
    core.add_request(req("x", ids, greedy(1, logprobs=20)))
    out = run_all(core)["x"][-1]
    assert out.metrics.prefix_hit_tokens == 32
    ref = torch.log_softmax(hf_logits(hf, ids)[-1], -1)
    for t, lp in out.logprobs[0].items():
        assert abs(lp - ref[t].item()) < 1e-3


def test_greedy_64_tokens_equal_hf_generate(default_model, core):
    tok, hf = default_model.tokenizer, default_model.hf_model
    prompts = [_chat_ids(default_model.tokenizer, p) for p in PROMPTS]
    for i, p in enumerate(prompts):
        core.add_request(req(str(i), p, greedy(64)))
    outs = run_all(core)
    for i, p in enumerate(prompts):
        with torch.inference_mode():
            # An explicit mask: the chat prompt contains <|im_end|>, which is also the pad token,
            # and generate would otherwise mask those positions out.
            ids = torch.tensor([p])
            g = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False,
                            eos_token_id=None, pad_token_id=tok.pad_token_id)
        assert tokens(outs[str(i)]) == g[0, len(p):].tolist(), PROMPTS[i]
    core.check_no_leaks()


async def test_chat_messages_stream_text_and_stop_strings(default_model):
    engine = Engine(EngineConfig(num_kv_blocks=256), hf_model=default_model.hf_model,
                    tokenizer=default_model.tokenizer)
    try:
        msgs = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
        outs = [o async for o in engine.generate(Request(messages=msgs, sampling=SamplingParams(
            max_tokens=60, temperature=0)))]
        text = "".join(o.text for o in outs)
        ids = [t for o in outs for t in o.token_ids]
        assert outs[-1].finish_reason == "stop"  # the model ends its turn with <|im_end|>
        assert text == default_model.tokenizer.decode(ids, skip_special_tokens=True)
        assert "1" in text and "5" in text
        stopped = [o async for o in engine.generate(Request(messages=msgs, sampling=SamplingParams(
            max_tokens=60, temperature=0, stop=["5"])))]
        stext = "".join(o.text for o in stopped)
        assert stopped[-1].finish_reason == "stop" and "5" not in stext and text.startswith(stext)
    finally:
        await engine.close()
