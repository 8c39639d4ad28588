"""``tether bench engine``: the engine against transformers ``generate``, measured in one run.

Workload: N concurrent requests (random prompts of 200-600 tokens, output
lengths drawn from 16-128 and forced with ignore_eos / min_new_tokens, the
same for all three runners), served by (1) the engine, (2) ``generate`` one
request at a time, (3) ``generate`` on one left-padded batch. Plus the prefix
cache: cold over warm TTFT for a 1,500-token prompt whose first 1,400 tokens
were served before. And guided decoding's cost: the engine run again with every
request decoded under a JSON schema (same prompts and lengths), as a ratio of
tokens/s in the same process. The result names the CPU and its vector ISA
(``torch.backends.cpu.get_cpu_capability()``), which the speedups depend on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import torch

from tether.engine.config import EngineConfig
from tether.engine.cpu_tuning import cpu_info
from tether.engine.engine import Engine
from tether.engine.guided import Guided
from tether.engine.progress import progress
from tether.engine.request import Request
from tether.engine.sampling import SamplingParams


def _workload(n: int, seed: int, vocab: int, token_seed: int | None = None) -> list[tuple[list[int], int]]:
    """``n`` (prompt, output length) pairs; ``token_seed`` draws other tokens for the same lengths."""
    rng = random.Random(seed)
    tok_rng = rng if token_seed is None else random.Random(token_seed)
    lo, hi = 1000, min(vocab, 40000)  # ordinary tokens, away from the special ones
    out = []
    for _ in range(n):
        prompt_len = rng.randint(200, 600)
        out.append(([tok_rng.randrange(lo, hi) for _ in range(prompt_len)], rng.randint(16, 128)))
    return out


# A record list: nested objects, an enum, bounded numbers, an open-ended array (it never runs out before
# max_tokens, so guided and plain runs emit the same number of tokens).
GUIDED_SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "items": {
    "type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9999},
                                     "kind": {"enum": ["file", "dir", "link"]},
                                     "size": {"type": "number", "minimum": 0}},
    "required": ["id", "kind", "size"], "additionalProperties": False}}}, "required": ["items"]}


async def _engine_run(engine: Engine, work, guided: Guided | None = None, advance=lambda n=1: None) -> float:
    async def one(ids, n):
        sp = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True, guided=guided)
        async for out in engine.generate(Request(prompt_token_ids=ids, sampling=sp)):
            advance(len(out.token_ids))
    t0 = time.perf_counter()
    await asyncio.gather(*(one(ids, n) for ids, n in work))
    return time.perf_counter() - t0


async def _ttft(engine: Engine, ids: list[int]) -> float:
    req = Request(prompt_token_ids=ids, sampling=SamplingParams(max_tokens=1, temperature=0, ignore_eos=True))
    async for out in engine.generate(req):
        if out.finished:
            return out.metrics.ttft
    raise RuntimeError("no output")


def _hf_sequential(hf, work, advance=lambda n=1: None) -> float:
    t0 = time.perf_counter()
    with torch.inference_mode():
        for ids, n in work:
            x = torch.tensor([ids])
            hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                        do_sample=False, pad_token_id=0)
            advance(n)
    return time.perf_counter() - t0


def _hf_batched(hf, work) -> float:
    width = max(len(ids) for ids, _ in work)
    x = torch.zeros((len(work), width), dtype=torch.long)
    mask = torch.zeros_like(x)
    for i, (ids, _) in enumerate(work):  # left padding, as generate expects
        x[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
    n = max(n for _, n in work)
    t0 = time.perf_counter()
    with torch.inference_mode():
        hf.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return time.perf_counter() - t0


async def _run(args) -> dict:
    budget = {} if args.budget is None else {"max_num_batched_tokens": args.budget}
    engine = Engine(EngineConfig(model=args.model, **budget))
    hf = engine.core.runner.model.hf
    work = _workload(args.requests, args.seed, hf.config.vocab_size)
    out_tokens = sum(n for _, n in work)

    # Warm up on a workload of the same size but other prompts: a 2-request warm-up left the timed run
    # ~30% slow (first-use costs of many shapes), and the same prompts would hit the prefix cache.
    await _engine_run(engine, _workload(args.requests, args.seed + 1, hf.config.vocab_size))
    with progress("engine (tokens)", out_tokens, args.json) as advance:
        t_engine = await _engine_run(engine, work, advance=advance)
    t_guided = None
    if args.guided:
        schema = Guided(json_schema=GUIDED_SCHEMA)
        await _engine_run(engine, _workload(2, args.seed + 3, hf.config.vocab_size), schema)  # compiles it
        # Fresh prompts (the timed ones are in the prefix cache now) of one set of lengths, unguided then
        # guided: the same work but for the grammar (different lengths moved the ratio by 10 points).
        plain = _workload(args.requests, args.seed + 4, hf.config.vocab_size, token_seed=args.seed + 6)
        other = _workload(args.requests, args.seed + 4, hf.config.vocab_size, token_seed=args.seed + 5)
        plain_tps = sum(n for _, n in plain) / await _engine_run(engine, plain)
        with progress("engine, all guided (tokens)", out_tokens, args.json) as advance:
            t_guided = await _engine_run(engine, other, schema, advance)
    rng = random.Random(args.seed + 2)
    shared = [rng.randrange(1000, 40000) for _ in range(1400)]
    cold = await _ttft(engine, [rng.randrange(1000, 40000) for _ in range(1500)])
    await _ttft(engine, shared)
    warm = await _ttft(engine, shared + [rng.randrange(1000, 40000) for _ in range(100)])
    stats = engine.stats()
    await engine.close()

    with progress("transformers sequential (tokens)", out_tokens, args.json) as advance:
        t_seq = _hf_sequential(hf, work, advance)
    with progress("transformers padded batch", None, args.json):
        t_bat = _hf_batched(hf, work)
    guided = {} if t_guided is None else {"guided_tokens_per_s": sum(n for _, n in other) / t_guided,
                                          "guided_cost": 1 - sum(n for _, n in other) / t_guided / plain_tps,
                                          "guided_wall_s": t_guided}
    return {
        "model": args.model, "requests": args.requests, "output_tokens": out_tokens, **cpu_info(),
        "threads": torch.get_num_threads(),
        "tokens_per_s": out_tokens / t_engine,
        "hf_sequential_tokens_per_s": out_tokens / t_seq,
        "hf_batched_tokens_per_s": out_tokens / t_bat,
        "speedup_vs_hf_sequential": t_seq / t_engine,
        "speedup_vs_hf_batched": t_bat / t_engine,
        "cold_ttft_s": cold, "warm_ttft_s": warm, "prefix_ttft_ratio": cold / warm,
        "engine_wall_s": t_engine, "hf_sequential_wall_s": t_seq, "hf_batched_wall_s": t_bat,
        "engine_steps": stats["steps"], "preemptions": stats["preemptions"], **guided,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="tether bench engine")
    p.add_argument("--model", default="default")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--budget", type=int, default=None, help="engine token budget per step (default: the engine's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-guided", dest="guided", action="store_false",
                   help="skip the run with every request under a JSON schema (guided decoding's cost)")
    args = p.parse_args(argv)
    result = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>28}: {v:.3f}" if isinstance(v, float) else f"{k:>28}: {v}")
    return result
