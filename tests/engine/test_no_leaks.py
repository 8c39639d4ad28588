"""A randomized run of submits, aborts, preemptions, pins and expiries leaks no block."""

from __future__ import annotations

import random

from engine_helpers import make_core, req
from tether.engine import SamplingParams
from tether.engine.clock import VirtualClock


def test_randomized_operations_leave_consistent_blocks(tiny_model):
    rng = random.Random(7)
    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, num_kv_blocks=12, max_num_batched_tokens=24,
                     queue_policy="program-fcfs")
    programs = [f"p{i}" for i in range(5)]
    history = {p: [3 + rng.randrange(120) for _ in range(rng.randrange(4, 40))] for p in programs}
    live: list[str] = []
    n = 0
    for _ in range(400):
        op = rng.random()
        if op < 0.25:
            p = rng.choice(programs)
            history[p] += [3 + rng.randrange(120) for _ in range(rng.randrange(1, 12))]
            history[p] = history[p][-100:]
            n += 1
            sp = SamplingParams(max_tokens=rng.randrange(1, 30), temperature=rng.choice([0, 1.0]), seed=n)
            core.add_request(req(f"r{n}", history[p], sp, program_id=p, is_last_turn=rng.random() < 0.1))
            live.append(f"r{n}")
        elif op < 0.32 and live:
            core.abort(rng.choice(live))
        elif op < 0.42:
            core.pins.pin(rng.choice(programs), ttl_s=rng.uniform(0, 3))
        elif op < 0.45:
            core.pins.release(rng.choice(programs))
        elif op < 0.47:
            core.end_program(rng.choice(programs))
        else:
            for o in core.step():
                if o.finished:
                    live.remove(o.request_id)
        clock.advance(rng.uniform(0, 0.3))
        core.check_no_leaks()
    while core.has_work():
        core.step()
        core.check_no_leaks()
    for p in programs:
        core.end_program(p)
    core.check_no_leaks()
    s = core.stats()
    assert s["preemptions"] > 0 and s["pins"] > 0 and s["aborted"] > 0 and s["pins_expired"] > 0
    assert s["kv_blocks_used"] == 0 and s["pinned_blocks"] == 0
