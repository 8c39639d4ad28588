"""``tether bench runtime``: what the Ray actors add to an LLM call, and how many
programs per second the runtime sustains, measured in one run.

The model defaults to a tiny random-weight checkpoint, so the model call is
close to a no-op and the runtime's own cost shows. The baseline, in the same run
and on the same cluster: bare Ray actors making the same hops with the same
payloads (a ``Request`` in, the replica's ``RequestOutput`` list back) and no
engine behind them:

- ``bare_1hop``: driver -> actor (what ``ReplicaClient.complete`` from the driver does);
- ``bare_2hop``: driver -> async actor -> actor, awaited (what a program actor's LLM call does).

``actor_overhead`` = tether's call through the replica actor minus the same call in
process; the target is ``actor_overhead_vs_bare`` (that over ``bare_1hop``) <= 1.5.
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
from tether.engine.cpu_tuning import cpu_model
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


class _EchoImpl:
    """The bare-Ray stand-in for a replica: answers a request with a canned reply, no engine."""

    def __init__(self, reply: list):
        self.reply = reply

    async def generate_full(self, request: Request) -> list:
        return self.reply


class _HopImpl:
    """The bare-Ray stand-in for a program actor: awaits one call on another actor."""

    def __init__(self, target):
        self.target = target

    async def call(self, request: Request) -> int:
        return len(await self.target.generate_full.remote(request))


Echo = ray.remote(max_concurrency=10_000)(_EchoImpl)
Hop = ray.remote(max_concurrency=10_000)(_HopImpl)


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
    reply: list = []

    async def local():
        reply[:] = [out async for out in engine.generate(_request())]
    await _latencies(local, 5)

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

        async def through_actor_program():  # a program's call: the route is known after its first call
            await client.complete(_request("bench-program"))

        echo = Echo.options(num_cpus=0).remote(reply)
        hop = Hop.options(num_cpus=0).remote(echo)

        async def bare_1hop():
            await echo.generate_full.remote(_request())

        async def bare_2hop():
            await hop.call.remote(_request())

        async def program_call():  # driver -> program actor -> replica: one LLM call, as bare_2hop
            await programs[0].run.remote("bench-one", one_call_program)

        programs = [AgentProgram.options(num_cpus=0).remote([replica], router, None, None, model)
                    for _ in range(args.program_actors)]
        await asyncio.gather(*(p.ping.remote() for p in programs))
        for fn in (through_actor, through_actor_program, bare_1hop, bare_2hop, program_call):
            await _latencies(fn, 5)  # warm up every path
        # Interleave the paths in rounds so machine noise (other load) falls on all of them alike.
        paths = {"inprocess": local, "actor": through_actor, "actor_program": through_actor_program,
                 "stream": streamed, "bare_1hop": bare_1hop, "bare_2hop": bare_2hop, "program_call": program_call}
        lat: dict[str, list[float]] = {k: [] for k in paths}
        rounds = 10
        for _ in range(rounds):
            for name, fn in paths.items():
                lat[name] += await _latencies(fn, max(1, args.calls // rounds))
        inproc, actor, stream = lat["inprocess"], lat["actor"], lat["stream"]

        async def one_local(i: int) -> None:
            async for _ in engine.generate(_request(f"local{i}")):
                pass
        t0 = time.perf_counter()  # what the engine alone sustains: the ceiling for programs/s
        await asyncio.gather(*(one_local(i) for i in range(args.programs)))
        engine_rate = args.programs / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        results = await asyncio.gather(*(programs[i % len(programs)].run.remote(f"p{i}", one_call_program)
                                         for i in range(args.programs)))
        wall = time.perf_counter() - t0
        ok = sum(r.ok for r in results)
    finally:
        ray.shutdown()
        await engine.close()
    med = statistics.median
    ms = lambda xs: med(xs) * 1e3  # noqa: E731
    actor_over = ms(actor) - ms(inproc)
    program_over = ms(lat["program_call"]) - ms(inproc)
    return {
        "model": args.model, "calls": args.calls, "cpu": cpu_model(),
        "inprocess_median_ms": ms(inproc),
        "actor_median_ms": ms(actor),
        "actor_overhead_median_ms": actor_over,
        "actor_program_overhead_median_ms": ms(lat["actor_program"]) - ms(inproc),
        "actor_streamed_median_ms": ms(stream),
        "actor_streamed_overhead_median_ms": ms(stream) - ms(inproc),
        "bare_1hop_median_ms": ms(lat["bare_1hop"]),
        "actor_overhead_vs_bare": actor_over / ms(lat["bare_1hop"]),
        "program_call_median_ms": ms(lat["program_call"]),
        "program_call_overhead_median_ms": program_over,
        "bare_2hop_median_ms": ms(lat["bare_2hop"]),
        "program_overhead_vs_bare": program_over / ms(lat["bare_2hop"]),
        "programs": args.programs, "programs_ok": ok, "programs_per_s": args.programs / wall,
        "engine_requests_per_s": engine_rate, "programs_per_s_vs_engine": args.programs / wall / engine_rate,
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
