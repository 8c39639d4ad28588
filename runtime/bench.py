"""``tether bench runtime``: what the Ray actors add to an LLM call, and how many
programs per second the runtime sustains, measured in one run.

The model defaults to a tiny random-weight checkpoint, so the model call is
close to a no-op and the runtime's own cost shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time

import ray

from tether.engine import Engine, EngineConfig, Request, SamplingParams
from tether.engine.random_model import save_random_checkpoint
from tether.runtime.local_cluster import init_local_ray
from tether.runtime.program import AgentProgram, ProgramServices
from tether.runtime.replica import EngineReplica
from tether.runtime.replica_client import ReplicaClient
from tether.runtime.router import Router

PROMPT = list(range(1000, 1040))


def _request(program_id: str | None = None) -> Request:
    return Request(prompt_token_ids=PROMPT, program_id=program_id,
                   sampling=SamplingParams(max_tokens=1, temperature=0, ignore_eos=True))


async def one_call_program(services: ProgramServices) -> int:
    """A program that makes a single one-token LLM call."""
    outs = await services.llm.complete(_request(services.program_id))
    return len(outs)


async def _latencies(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def _run(args) -> dict:
    model = args.model
    if model == "tiny":
        model = str(save_random_checkpoint(tempfile.mkdtemp(prefix="tether-bench-")))
    cfg = EngineConfig(model=model, num_kv_blocks=4096, max_num_seqs=256)

    engine = Engine(cfg)

    async def local():
        async for _ in engine.generate(_request()):
            pass
    await _latencies(local, 5)
    inproc = await _latencies(local, args.calls)
    await engine.close()

    init_local_ray(num_cpus=2, log_to_driver=False, configure_logging=False)  # loopback only
    try:
        replica = EngineReplica.options(num_cpus=0).remote(cfg)
        router = Router.options(num_cpus=0).remote(1)
        await replica.ready.remote()
        client = ReplicaClient([replica], router, None, model)

        async def through_actor():
            await client.complete(_request())

        async def streamed():
            async for _ in client.generate(_request()):
                pass
        await _latencies(through_actor, 5)
        actor = await _latencies(through_actor, args.calls)
        stream = await _latencies(streamed, args.calls)

        programs = [AgentProgram.options(num_cpus=0).remote([replica], router, None, None, model)
                    for _ in range(args.program_actors)]
        await asyncio.gather(*(p.ping.remote() for p in programs))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(programs[i % len(programs)].run.remote(f"p{i}", one_call_program)
                                         for i in range(args.programs)))
        wall = time.perf_counter() - t0
        ok = sum(r.ok for r in results)
    finally:
        ray.shutdown()
    med = statistics.median
    return {
        "model": args.model, "calls": args.calls,
        "inprocess_median_ms": med(inproc) * 1e3,
        "actor_median_ms": med(actor) * 1e3,
        "actor_overhead_median_ms": (med(actor) - med(inproc)) * 1e3,
        "actor_streamed_median_ms": med(stream) * 1e3,
        "actor_streamed_overhead_median_ms": (med(stream) - med(inproc)) * 1e3,
        "programs": args.programs, "programs_ok": ok, "programs_per_s": args.programs / wall,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="tether bench runtime")
    p.add_argument("--model", default="tiny", help="'tiny' (random weights, near no-op) or any model")
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--programs", type=int, default=500)
    p.add_argument("--program-actors", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = asyncio.run(_run(args))
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return result
