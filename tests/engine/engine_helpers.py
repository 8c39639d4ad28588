"""Helpers for engine tests: build a core on the tiny model and run it to completion."""

from __future__ import annotations

import torch

from tether.engine import EngineConfig, Request, SamplingParams, build_core
from tether.engine.clock import Clock


def make_core(model, clock: Clock | None = None, **cfg):
    cfg.setdefault("num_kv_blocks", 64)
    cfg.setdefault("max_num_batched_tokens", 64)
    return build_core(EngineConfig(**cfg), model, None, clock=clock)


def greedy(max_tokens: int = 8, **kw) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **kw)


def run_all(core, max_steps: int = 10_000) -> dict[str, list]:
    """Step until idle; return request id -> list of outputs."""
    outs: dict[str, list] = {}
    for _ in range(max_steps):
        if not core.has_work():
            return outs
        for o in core.step():
            outs.setdefault(o.request_id, []).append(o)
    raise AssertionError("engine did not finish")


def tokens(outs) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def req(rid: str, ids: list[int], sp: SamplingParams | None = None, **kw) -> Request:
    return Request(request_id=rid, prompt_token_ids=ids, sampling=sp or greedy(), **kw)


def hf_logits(model, ids: list[int]) -> torch.Tensor:
    """transformers' own logits for one prompt, [len(ids), vocab] fp32."""
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    """transformers' greedy continuation of ``ids`` for exactly ``n`` tokens."""
    with torch.inference_mode():
        g = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                           pad_token_id=0)
    return g[0, len(ids):].tolist()
