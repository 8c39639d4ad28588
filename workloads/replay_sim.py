"""Simulated replay: the engine's scheduler and KV manager on a virtual clock.

Programs arrive (at their arrival times, or as a closed loop at fixed
concurrency); each turn's prompt is the program's history plus what the turn
appends, its output is forced to the recorded tokens; after a turn the
program waits out its tool's duration on the virtual clock. A turn arrives at
its true time (the engine sees that arrival time, and the predictor learns the
true tool duration), though it is queued only at the next step boundary, as a
real engine would. The same trace, seed and profile give the same numbers exactly.
A turn with chunk arrivals (``append_chunks``) streams its appended tokens in as they
arrive, or waits for all of them (``settings.stream``): ``sim_streams.py``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import time

from tether.engine import EngineConfig, Request, SamplingParams
from tether.engine.clock import VirtualClock
from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import PolicyPreset
from tether.engine.sim_runner import build_simulated_core
from tether.engine.tool_key import tool_key
from tether.runtime.tracing.replay_spans import SimSpans
from tether.workloads.chunks import chunk_steps
from tether.workloads.records import KVSample, ReplayRun, TurnRecord
from tether.workloads.replay_common import ReplaySettings, TurnFeeder
from tether.workloads.sim_streams import SimStreams


def replay_sim(feeder: TurnFeeder, policy: PolicyPreset, profile: LatencyProfile, settings: ReplaySettings,
               trace_dir: str | None = None) -> ReplayRun:
    """Replay every program of ``feeder`` under ``policy``; returns what happened, turn by turn.

    Example::

        run = replay_sim(TurnFeeder(trace), POLICY_PRESETS.get("baseline"), profile, ReplaySettings(kv_blocks=20000))

    ``trace_dir``: also write the run's spans (on the virtual clock) into a new run folder there.
    """
    started = time.perf_counter()
    clock = VirtualClock()
    cfg = EngineConfig(num_kv_blocks=settings.kv_blocks, block_size=settings.block_size,
                       max_num_batched_tokens=settings.max_num_batched_tokens, max_num_seqs=settings.max_num_seqs,
                       policy=policy.name, host_kv_blocks=settings.host_kv_blocks,
                       stream_min_chunk=settings.stream_min_chunk)
    core = build_simulated_core(cfg, profile, clock)
    spans = SimSpans.open(core, policy.name, trace_dir)  # None: no tracing, no listener
    run = ReplayRun(policy.name, "sim", kv_total_blocks=settings.kv_blocks)
    # (time, order, program index, turn index, chunk): chunk None is the turn's start, else the
    # index of a streamed turn's chunk arrival (sim_streams.WHOLE: wait-for-all's one submission)
    events: list[tuple[float, int, int, int, int | None]] = []
    order = itertools.count()
    streams = SimStreams(core, settings)
    programs = feeder.trace.programs
    next_program = 0
    if settings.concurrency:  # closed loop: keep C programs in flight
        for next_program in range(min(settings.concurrency, len(programs))):
            heapq.heappush(events, (0.0, next(order), next_program, 0, None))
        next_program += 1
    else:
        for i, p in enumerate(programs):
            heapq.heappush(events, (p.arrival_s * settings.time_scale, next(order), i, 0, None))
        next_program = len(programs)
    inflight: dict[str, tuple[int, int, float, float | None]] = {}  # rid -> (pi, ti, start, last chunk)
    stalled = 0

    while events or core.has_work():
        while events and events[0][0] <= clock.now():
            arrival, _, pi, ti, chunk = heapq.heappop(events)
            program = programs[pi]
            rid = f"{program.program_id}/{ti}"
            if chunk is not None:  # a streamed turn's chunk arrives
                streams.arrive(rid, chunk, arrival)
                continue
            if ti == 0:
                run.program_arrivals[program.program_id] = arrival
            prompt, output = feeder.turn_tokens(pi, ti)
            if spans:
                spans.turn_arrived(program.program_id, ti, rid, arrival)
            request = Request(
                request_id=rid, prompt_token_ids=prompt, program_id=program.program_id, turn=ti,
                is_last_turn=ti == len(program.turns) - 1,
                sampling=SamplingParams(max_tokens=len(output), forced_output_ids=output))
            turn = program.turns[ti]
            last_chunk = None
            if turn.append_chunks is None:
                core.add_request(request, arrival_time=arrival)
            else:
                steps = chunk_steps(turn, settings.seed, program.program_id, ti)
                push = functools.partial(_push, events, order, pi, ti)
                last_chunk = streams.start(rid, request, prompt[:len(prompt) - turn.append_tokens], steps,
                                           arrival, push)
            inflight[rid] = (pi, ti, arrival, last_chunk)
        if not core.has_work():
            clock.set(events[0][0])  # idle: jump to the next arrival or tool return
            continue
        before, outs = clock.now(), core.step()
        stalled = stalled + 1 if clock.now() == before and not outs else 0
        if stalled > 1000:  # has_work() said yes, yet nothing runs: fail loudly rather than spin forever
            raise RuntimeError(f"the simulated engine made no progress in 1000 steps at t={before:.3f} s")
        for out in outs:
            if not out.finished:
                continue
            pi, ti, submitted, last_chunk = inflight.pop(out.request_id)
            program = programs[pi]
            m = out.metrics
            last = ti == len(program.turns) - 1
            tool = None if last else program.turns[ti].tool  # a turn may answer without calling a tool
            wait = tool.duration_s * settings.time_scale if tool else 0.0
            run.turns.append(TurnRecord(program.program_id, ti, submitted, m.first_token_time, m.finished_time,
                                        m.prompt_tokens, m.prefix_hit_tokens, m.output_tokens,
                                        tool.name if tool else None, wait, m.preemptions, last_chunk,
                                        m.invalidated_tokens))
            if spans:
                spans.turn_finished(program.program_id, out, tool.name if tool else None, wait, last,
                                    tool_key(tool.name, tool.arguments) if tool else None)
            if not last:
                if tool is not None:
                    core.tool_hint(program.program_id, [tool_key(tool.name, tool.arguments)])
                heapq.heappush(events, (clock.now() + wait, next(order), pi, ti + 1, None))
            else:
                core.end_program(program.program_id)  # as the real runtime does when a program returns
                if settings.concurrency and next_program < len(programs):
                    heapq.heappush(events, (clock.now(), next(order), next_program, 0, None))
                    next_program += 1
        pool = core.pool
        host = len(core.kv.host) if core.kv.host is not None else 0
        run.kv_samples.append(KVSample(clock.now(), pool.num_used, core.pins.pinned_blocks, pool.num_cached_free, host))
    core.check_no_leaks()  # cheap, and a replay that leaks blocks must not report numbers
    run.engine_stats = core.stats()
    if spans:
        run.trace_dir = str(spans.close())
    run.wall_s = time.perf_counter() - started
    return run


def _push(events: list, order: itertools.count, pi: int, ti: int, at: float, chunk: int) -> None:
    """Schedule chunk arrival ``chunk`` of turn ``ti`` of program ``pi`` at ``at``."""
    heapq.heappush(events, (at, next(order), pi, ti, chunk))
