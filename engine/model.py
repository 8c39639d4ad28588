"""Our forward pass for Llama-family decoders over transformers-loaded weights.

The layers' weights and submodules (projections, RMSNorm, SwiGLU MLP, rotary
frequencies) are transformers' own, so numerics match its forward; attention
and KV writes go through ``tether.kernels`` so they read the paged cache.
Covers Llama, Mistral (no sliding window), Qwen2 (qkv bias) and SmolLM.

Architectures are registered by transformers' ``model_type``; ``build_model``
picks one. Another decoder is one class (this one's interface) plus
``MODEL_ARCHITECTURES.register(model_type, cls)``.
"""

from __future__ import annotations

import torch

from tether.engine.attention import AttentionMetadata
from tether.engine.linear import PackedLinear
from tether.engine.registry import Registry
from tether.engine.reuse_step import ReuseStep
from tether.kernels import paged_attention, store_kv
from tether.kernels.reference import rotate_half

class PagedCausalLM:
    """Runs a transformers causal LM step by step over a paged KV cache.

    Example::

        model = PagedCausalLM(hf_model)
        kv = model.allocate_kv_cache(num_blocks=256, block_size=16)
        logits = model.forward(input_ids, positions, meta, kv, logits_indices)
    """

    def __init__(self, hf_model: torch.nn.Module):
        cfg = hf_model.config
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) \
                and cfg.sliding_window < cfg.max_position_embeddings:
            raise ValueError("sliding-window attention is not supported yet")
        self.hf = hf_model
        self.inner = hf_model.model
        self.layers = list(self.inner.layers)
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim ** -0.5
        rotary = self.inner.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.attention_scaling = float(getattr(rotary, "attention_scaling", 1.0))
        p = next(hf_model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self.qkv = [PackedLinear([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj]) for l in self.layers]
        self.o_proj = [PackedLinear([l.self_attn.o_proj]) for l in self.layers]
        self.gate_up = [PackedLinear([l.mlp.gate_proj, l.mlp.up_proj]) for l in self.layers]
        self.down = [PackedLinear([l.mlp.down_proj]) for l in self.layers]
        self.lm_head = PackedLinear([hf_model.lm_head])

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (num_blocks, block_size, self.num_kv_heads, self.head_dim)
        return [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                 torch.zeros(shape, dtype=self.dtype, device=self.device)) for _ in self.layers]

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [T, 1, head_dim] exactly as transformers computes them (fp32, then cast)."""
        freqs = positions[:, None].float() * self.inv_freq.to(positions.device)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_scaling).to(self.dtype)[:, None, :]
        sin = (emb.sin() * self.attention_scaling).to(self.dtype)[:, None, :]
        return cos, sin

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                logits_indices: torch.Tensor | None = None, reuse: ReuseStep | None = None) -> torch.Tensor:
        """Logits [len(logits_indices), vocab] (all rows when None) for one flattened step.

        ``reuse``: rows of placed tokens (KV already in the cache) to check, recompute in
        part or record deltas for (``reuse_step.py``)."""
        h = self.inner.embed_tokens(input_ids)
        cos, sin = self.rope(positions)
        T = input_ids.shape[0]
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        for i, (layer, (k_cache, v_cache)) in enumerate(zip(self.layers, kv_caches)):
            qkv = self.qkv[i](layer.input_layernorm(h))
            # q and k rotate together: one set of elementwise ops per layer instead of two.
            qk = qkv[:, :q_dim + kv_dim].reshape(T, self.num_heads + self.num_kv_heads, self.head_dim)
            q, k = (qk * cos + rotate_half(qk) * sin).split((self.num_heads, self.num_kv_heads), dim=1)
            v = qkv[:, q_dim + kv_dim:].reshape(T, self.num_kv_heads, self.head_dim)
            keep = reuse.before_store(i, k, v, k_cache, v_cache, meta.slot_mapping) if reuse is not None else None
            store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
            if keep is not None:  # placed rows that deviate little stop here: their placed KV stays
                q, h, cos, sin = q[keep], h[keep], cos[keep], sin[keep]
                if logits_indices is not None:
                    logits_indices = (torch.cumsum(keep, 0) - 1)[logits_indices]
                meta = meta.keep_rows(keep, positions if meta.query_positions is None else meta.query_positions)
                positions = meta.query_positions
                T = q.shape[0]
            o = paged_attention(q, k_cache, v_cache, meta.block_tables, meta.query_start_loc, meta.seq_lens,
                                self.scale, max_q_len=meta.max_q_len, max_seq_len=meta.max_seq_len,
                                query_positions=meta.query_positions)
            h = h + self.o_proj[i](o.reshape(T, q_dim))
            gate, up = self.gate_up[i](layer.post_attention_layernorm(h)).chunk(2, dim=-1)
            h = h + self.down[i](layer.mlp.act_fn(gate) * up)
        if logits_indices is not None:
            h = h[logits_indices]
        h = self.inner.norm(h)
        return self.lm_head(h).float()


MODEL_ARCHITECTURES: Registry[type[PagedCausalLM]] = Registry("model architecture")
for _model_type in ("llama", "mistral", "qwen2"):
    MODEL_ARCHITECTURES.register(_model_type, PagedCausalLM)


def build_model(hf_model: torch.nn.Module) -> PagedCausalLM:
    """Our paged forward for ``hf_model``, by its ``config.model_type``.

    Example::

        model = build_model(AutoModelForCausalLM.from_pretrained(path))
    """
    model_type = hf_model.config.model_type
    if model_type not in MODEL_ARCHITECTURES:
        raise ValueError(f"model_type {model_type!r} is not supported; tether runs "
                         f"{', '.join(MODEL_ARCHITECTURES)} (Llama-family decoders)")
    return MODEL_ARCHITECTURES.get(model_type)(hf_model)
