"""``tether bench tracing``: what tracing costs ``tether bench engine``'s workload, on vs off, in one run.

One engine, the same requests, rounds alternating off/on/on/off... so drift hits both alike.
On: ``EngineSpans`` records, every request runs inside a ``chat`` span as the SDK makes, spans go
to a throwaway store. Off: the listener returns at once and no span is made (with tracing off in
a real run there is no listener at all, so the engine does not even build its events). The
result is the median over rounds of traced tokens/s over untraced tokens/s. On a shared machine
that ratio carries the other jobs' noise, so the CPU time spent in tracing code (the engine
listener, and the ``chat`` spans) is also measured, as a share of the process's CPU time in the
traced rounds. Example::

    tether bench tracing --rounds 4 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time

import torch

from tether.engine.bench import _workload
from tether.engine.config import EngineConfig
from tether.engine.engine import Engine
from tether.engine.model_loader import load_model
from tether.engine.request import Request
from tether.engine.sampling import SamplingParams
from tether.runtime import tracing
from tether.engine.cpu_tuning import cpu_model
from tether.runtime.tracing.engine_spans import EngineSpans
from tether.runtime.tracing.store import list_runs, read_run


class _CPU:
    """CPU seconds spent in tracing code (``time.thread_time`` of the thread that ran it); ``on``
    switches the wrapped listener."""

    def __init__(self):
        self.s = 0.0
        self.on = False

    def wrap(self, fn):
        def timed(*args):
            if not self.on:
                return None
            t0 = time.thread_time()
            try:
                return fn(*args)
            finally:
                self.s += time.thread_time() - t0
        return timed


async def _round(engine: Engine, work, traced: bool, cpu: _CPU | None = None) -> float:
    async def one(k: int, ids: list[int], n: int) -> None:
        req = Request(prompt_token_ids=ids, program_id=f"bench-{k}",
                      sampling=SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
        if not traced:
            async for _ in engine.generate(req):
                pass
            return
        t0 = time.thread_time()
        span = tracing.span("chat bench", {"gen_ai.operation.name": "chat"})
        span.__enter__()
        if cpu is not None:
            cpu.s += time.thread_time() - t0
        try:
            async for _ in engine.generate(req):
                pass
        finally:
            t0 = time.thread_time()
            span.__exit__(None, None, None)
            if cpu is not None:
                cpu.s += time.thread_time() - t0
    t0 = time.perf_counter()
    await asyncio.gather(*(one(k, ids, n) for k, (ids, n) in enumerate(work)))
    return time.perf_counter() - t0


async def _run(args) -> dict:
    loaded = load_model(args.model)
    cfg = EngineConfig(model=args.model, max_num_batched_tokens=args.budget, num_kv_blocks=args.kv_blocks)
    engine = Engine(cfg, hf_model=loaded.hf_model, tokenizer=loaded.tokenizer)
    store = tempfile.mkdtemp(prefix="tether-bench-tracing-")
    run_dir = tracing.enable(store, kind="bench", export_env=False)
    listener, cpu = EngineSpans(engine.core, tracing.tracer()), _CPU()
    engine.add_listener(cpu.wrap(listener))  # what ``attach`` registers, timed and switchable
    vocab = loaded.hf_model.config.vocab_size
    work = _workload(args.requests, args.seed, vocab)
    out_tokens = sum(n for _, n in work)
    for on in (False, True):  # warm up
        cpu.on = on
        await _round(engine, _workload(2, args.seed + 1, vocab), on)
    off_s, on_s = [], []
    cpu.s, process_cpu = 0.0, 0.0  # the warm-up does not count
    for r in range(args.rounds):
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            cpu.on = on
            p0 = time.process_time()
            (on_s if on else off_s).append(await _round(engine, work, on, cpu if on else None))
            if on:
                process_cpu += time.process_time() - p0
            print(f"round {r} tracing {'on ' if on else 'off'}: {out_tokens / (on_s if on else off_s)[-1]:.1f} tokens/s",
                  file=sys.stderr, flush=True)  # progress, and what a killed run still tells
    await engine.close()
    listener.close()
    tracing.disable()
    spans = read_run(list_runs(run_dir)[0]) if list_runs(run_dir) else []
    ratios = [off / on for off, on in zip(off_s, on_s)]  # traced tokens/s over untraced tokens/s, per round
    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "model": args.model,
            "requests": args.requests, "output_tokens": out_tokens, "rounds": args.rounds,
            "off_tokens_per_s": [out_tokens / s for s in off_s], "on_tokens_per_s": [out_tokens / s for s in on_s],
            "on_over_off_median": statistics.median(ratios), "on_over_off_per_round": ratios,
            "overhead_pct_median": 100 * (1 - statistics.median(ratios)),
            "tracing_cpu_s": cpu.s, "traced_rounds_process_cpu_s": process_cpu,
            "tracing_cpu_share_pct": 100 * cpu.s / process_cpu if process_cpu else None,
            "spans_written": len(spans), "trace_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="tether bench tracing", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--budget", type=int, default=512, help="engine token budget per step (as tether bench engine)")
    p.add_argument("--kv-blocks", type=int, default=1024, help="KV blocks of the engine")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.requests < 1:
        p.error("--rounds and --requests must be at least 1")
    result = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return result
