"""Helpers for engine tests: build a core on the tiny model and run it to completion."""

from __future__ import annotations

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
