"""A tiny random-weight Llama built in-process from a config: fast exactness tests."""

from __future__ import annotations

import torch


def tiny_llama(seed: int = 0, rope_scaling: dict | None = None, vocab_size: int = 128, tie: bool = False,
               num_layers: int = 2):
    """A Llama of ``num_layers`` layers (default 2) with GQA (4 query heads, 2 KV heads), random weights, fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = {}
    if rope_scaling is not None:
        kw["rope_parameters"] = rope_scaling
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0, **kw)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    # Random init is small; scale up so logits differ meaningfully between tokens.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    return model
