"""The host tier: a waiting program's evicted blocks go to host memory and come back exactly."""

from __future__ import annotations

from engine_helpers import greedy, hf_greedy, make_core, req, run_all
from tether.engine.host_tier import HostTier


def test_host_tier_lru_reuse():
    tier = HostTier(2)
    a, b = tier.put(10), tier.put(20)
    assert tier.put(10) == a and tier.lookup(20) == b
    c = tier.put(30)  # full: the oldest (20) goes
    assert c == b and tier.lookup(20) is None and tier.dropped_blocks == 1


def test_evicted_blocks_of_a_program_in_a_tool_call_come_back_from_the_host(tiny_model):
    core = make_core(tiny_model, num_kv_blocks=8, host_kv_blocks=16, max_num_batched_tokens=64)
    hist = list(range(3, 51))  # 3 full blocks
    core.add_request(req("t1", hist, greedy(2), program_id="prog"))
    out1 = run_all(core)["t1"]
    core.tool_hint("prog", ["pytest"])  # the program is away: keep its blocks on the host if evicted
    core.add_request(req("other", [3 + (i % 120) for i in range(60, 176)], greedy(2)))
    run_all(core)  # needs the whole pool: prog's cached blocks are evicted, copied to the host
    assert core.stats()["host_stored_blocks"] >= 3 and core.stats()["evicted_tokens"] > 0
    turn2 = hist + [t for o in out1 for t in o.token_ids] + [7, 8, 9]
    core.add_request(req("t2", turn2, greedy(8, logprobs=5), program_id="prog"))
    out2 = run_all(core)["t2"]
    assert out2[-1].metrics.prefix_hit_tokens == 48 and core.stats()["host_hit_tokens"] == 48
    # the copied-back KV gives transformers' own answer
    assert [t for o in out2 for t in o.token_ids] == hf_greedy(tiny_model, turn2, 8)
    core.check_no_leaks()
