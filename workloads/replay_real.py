"""Real replay: each program runs as an agent program through the runtime (Ray actors,
an engine replica, a real model). Prompts are the trace's history, outputs are
forced to the recorded tokens, and tool phases are waited out in real time.

Streamed turns (``append_chunks``) are not streamed here yet: each is sent whole at its
last chunk's arrival (wait-for-all), and the results' meta says so (``streamed``)."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from dataclasses import dataclass

from tether.agents import Runtime
from tether.engine import Request, SamplingParams
from tether.engine.policies import PolicyPreset
from tether.engine.progress import progress
from tether.engine.tool_key import tool_key
from tether.runtime.program import ProgramServices
from tether.workloads.trace import ToolCallRecord
from tether.workloads.records import KVSample, ReplayRun, TurnRecord
from tether.workloads.replay_common import ReplaySettings, TurnFeeder


@dataclass
class TurnPlan:
    append_ids: list[int]
    output_ids: list[int]
    tool: ToolCallRecord | None  # None: the turn answers without calling a tool (or ends the program)
    tool_wait_s: float
    chunk_wait_s: float | None = None  # a streamed turn: its last chunk arrives this long after its start


async def replay_program(services: ProgramServices, plan: list[TurnPlan], t0: float) -> list[TurnRecord]:
    """The agent program that replays one trace program (runs inside an ``AgentProgram`` actor)."""
    records, history = [], []
    for ti, turn in enumerate(plan):
        history = history + turn.append_ids
        last = ti == len(plan) - 1
        submitted = time.time() - t0
        sent = None
        if turn.chunk_wait_s is not None:  # wait-for-all: the whole prompt once its last chunk is in
            await asyncio.sleep(turn.chunk_wait_s)
            sent = time.time() - t0
        outs = await services.llm.complete(Request(
            prompt_token_ids=history, program_id=services.program_id, turn=ti, is_last_turn=last,
            sampling=SamplingParams(max_tokens=len(turn.output_ids), forced_output_ids=turn.output_ids)))
        m = outs[-1].metrics
        first = (submitted if sent is None else sent) + (m.ttft or 0.0)
        records.append(TurnRecord(services.program_id, ti, submitted, first, first + (m.decode_time or 0.0),
                                  m.prompt_tokens, m.prefix_hit_tokens, m.output_tokens,
                                  turn.tool.name if turn.tool else None,
                                  turn.tool_wait_s, m.preemptions, last_chunk_s=sent))
        history = history + [t for o in outs for t in o.token_ids]
        if not last and turn.tool is not None:  # a turn may answer without calling a tool
            await services.llm.tool_hint(services.program_id, [tool_key(turn.tool.name, turn.tool.arguments)])
            await asyncio.sleep(turn.tool_wait_s)
    return records


async def _entry(plan: list[TurnPlan], t0: float, ctx) -> list[TurnRecord]:
    return await replay_program(ctx.services, plan, t0)


def _plan(feeder: TurnFeeder, pi: int, time_scale: float) -> list[TurnPlan]:
    turns = feeder.trace.programs[pi].turns
    tools = [t.tool for t in turns[:-1]] + [None]  # the last turn's call (if any) ends the program, as in sim
    return [TurnPlan(list(t.append_token_ids), list(t.output_token_ids), tool,
                     tool.duration_s * time_scale if tool else 0.0,
                     None if t.append_chunks is None else t.append_chunks[-1].time_s * time_scale)
            for t, tool in zip(turns, tools)]


def replay_real(feeder: TurnFeeder, policy: PolicyPreset, settings: ReplaySettings, model: str = "default") -> ReplayRun:
    """Replay the trace through a fresh ``Runtime`` whose engine runs ``policy``."""
    started = time.perf_counter()
    _check_fits(feeder, model)
    if feeder.trace.streamed_turns:
        print(f"note: real mode does not stream prompts yet: {feeder.trace.streamed_turns} streamed turns are "
              "sent whole at their last chunk's arrival (wait-for-all)", file=sys.stderr)
    engine = dict(policy=policy.name, host_kv_blocks=settings.host_kv_blocks, num_kv_blocks=settings.kv_blocks,
                  block_size=settings.block_size, max_num_batched_tokens=settings.max_num_batched_tokens,
                  max_num_seqs=settings.max_num_seqs)
    run = ReplayRun(policy.name, "real", kv_total_blocks=settings.kv_blocks)
    with Runtime(model=model, replicas=1, engine=engine) as rt:
        run.turns, run.kv_samples, run.program_arrivals = asyncio.run(_drive(rt, feeder, settings))
        run.engine_stats = rt.stats()["replicas"][0]
    run.wall_s = time.perf_counter() - started
    return run


@functools.lru_cache
def _context_window(model: str) -> int:
    """The model's context window (read once per process, not once per policy)."""
    from transformers import AutoConfig

    from tether.engine.model_loader import resolve_model_path
    return AutoConfig.from_pretrained(str(resolve_model_path(model))).max_position_embeddings


def _check_fits(feeder: TurnFeeder, model: str) -> None:
    """Refuse up front a trace whose programs outgrow the model's context window."""
    window = _context_window(model)
    too_long = [(p.program_id, p.total_tokens) for p in feeder.trace.programs if p.total_tokens > window]
    if too_long:
        pid, n = max(too_long, key=lambda x: x[1])
        raise ValueError(f"{len(too_long)} program(s) outgrow the model's {window}-token context (largest: {pid}, "
                         f"{n} tokens); replay with --max-context {window} to shrink their tokens, keeping turns")


async def _drive(rt: Runtime, feeder: TurnFeeder, settings: ReplaySettings):
    programs = feeder.trace.programs
    t0 = time.time()
    samples: list[KVSample] = []
    arrivals: dict[str, float] = {}
    limit = asyncio.Semaphore(settings.concurrency or len(programs))
    failures: list[str] = []

    async def one(pi: int) -> list[TurnRecord]:
        program = programs[pi]
        if not settings.concurrency:
            await asyncio.sleep(max(0.0, program.arrival_s * settings.time_scale - (time.time() - t0)))
        async with limit:
            arrivals[program.program_id] = time.time() - t0
            entry = functools.partial(_entry, _plan(feeder, pi, settings.time_scale), t0)
            handle = rt.submit(entry, program_id=program.program_id)
            res = await handle.outcome_async()  # every program runs to its end, failed or not
            advance()
            if not res.ok:
                failures.append(f"{program.program_id}: {res.error}")
                return []
            return res.value.value

    async def sample_kv(stop: asyncio.Event) -> None:
        replica = rt.replicas[0]
        while not stop.is_set():
            s = await replica.stats.remote()
            samples.append(KVSample(time.time() - t0, s["kv_blocks_used"], s["pinned_blocks"],
                                    s["kv_blocks_cached_free"], s["host_blocks"]))
            await asyncio.sleep(0.1)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_kv(stop))
    try:
        with progress("real replay (programs done)", len(programs)) as advance:  # a bar on a terminal only
            per_program = await asyncio.gather(*(one(i) for i in range(len(programs))))
    finally:
        stop.set()
        await sampler
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(programs)} programs failed in the real replay: "
                           + "; ".join(failures[:3]))
    return [r for recs in per_program for r in recs], samples, arrivals
