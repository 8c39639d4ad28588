"""Random-weight checkpoints of real or tiny Llama configs, with the default model's tokenizer.

They load like any Hugging Face folder, so tests and benchmarks exercise the
full loading path without a hub: a tiny one runs in milliseconds per step, and
a real config (Llama-3.1-8B) times the same as its real weights on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192},
                         tie_word_embeddings=False),
}


def save_random_checkpoint(path: str | Path, preset: str = "tiny", seed: int = 0,
                           tokenizer_from: str = "default", **overrides: Any) -> Path:
    """Write a random-weight Llama checkpoint (config, safetensors, tokenizer) to ``path``.

    Example::

        save_random_checkpoint("/tmp/tiny")          # then EngineConfig(model="/tmp/tiny")
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tether.engine.model_loader import resolve_model_path

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    path = Path(path)
    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(tokenizer_from)))
    kw = {**PRESETS[preset], **overrides}
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **kw)
    torch.manual_seed(seed)
    with torch.device("meta" if preset != "tiny" else "cpu"):
        model = LlamaForCausalLM(cfg)
    if preset != "tiny":  # materialize big configs cheaply in bf16
        model = model.to_empty(device="cpu").to(torch.bfloat16)
        for p in model.parameters():
            p.data.normal_(0, 0.02)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
