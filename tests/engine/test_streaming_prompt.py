"""Open (streamed) prompts: chunks prefilled as they arrive, replace rolls back to the common
prefix, nothing sampled before seal, and the result equals sending the final prompt whole."""

from __future__ import annotations

import asyncio

import pytest
import torch

from engine_helpers import greedy, make_core, req, run_all, tokens
from tether.engine import Engine, EngineConfig, RequestRejected
from tether.engine.queue_policy import QUEUE_POLICIES

LP_TOL = 1e-4


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _whole(model, ids, sp, **cfg):
    core = make_core(model, **cfg)
    core.add_request(req("whole", ids, sp))
    return run_all(core)["whole"]


def _steps(core, n):
    outs = []
    for _ in range(n):
        outs += core.step()
    return outs


def _assert_same(streamed, whole):
    assert tokens(streamed) == tokens(whole)
    for a, b in zip([lp for o in streamed for lp in o.logprobs], [lp for o in whole for lp in o.logprobs]):
        assert a.keys() == b.keys()
        for t in a:
            assert abs(a[t] - b[t]) < LP_TOL


def test_appended_chunks_equal_whole_prompt_and_nothing_sampled_before_seal(tiny_model):
    final = _prompt(70, 1)
    sp = greedy(12, logprobs=5)
    core = make_core(tiny_model, max_num_batched_tokens=16)
    seq = core.open_request(req("s", final[:9], sp))
    for a, b in ((9, 30), (30, 31), (31, 70)):
        assert _steps(core, 4) == []  # prefills what it has, samples nothing
        assert seq.num_computed_tokens == seq.num_tokens - 1  # caught up, newest token held back
        assert not core.has_work()  # an idle open prompt does not spin the step loop
        core.append_prompt("s", final[a:b])
    assert _steps(core, 6) == [] and seq.num_computed_tokens == 69
    core.seal_prompt("s")
    outs = run_all(core)["s"]
    _assert_same(outs, _whole(tiny_model, final, sp))
    m = outs[-1].metrics
    assert m.prompt_tokens == 70 and m.invalidated_tokens == 0 and m.last_chunk_time is not None
    core.check_no_leaks()


def test_replace_rolls_back_to_common_prefix_then_seal_equals_whole(tiny_model):
    first = _prompt(60, 2)
    final = first[:37] + _prompt(30, 3)  # revised after token 37: blocks from 32 on are stale
    sp = greedy(10, logprobs=5)
    core = make_core(tiny_model, max_num_batched_tokens=64, block_size=16)
    seq = core.open_request(req("u", first, sp))
    _steps(core, 2)
    assert seq.num_computed_tokens == 59
    held = len(seq.block_table)
    lost = core.replace_prompt("u", final)
    assert lost == 59 - 32  # whole blocks kept: 2 blocks of 16
    assert seq.num_computed_tokens == 32 and len(seq.block_table) == 2 < held
    assert seq.block_hashes(16)[:2] == seq.block_hashes(16)[:2] and len(seq._block_hashes) <= 4
    core.check_no_leaks()
    core.seal_prompt("u")
    outs = run_all(core)["u"]
    _assert_same(outs, _whole(tiny_model, final, sp, block_size=16))
    assert outs[-1].metrics.invalidated_tokens == 27 and core.stats() is not None
    core.check_no_leaks()


def test_replace_never_registers_stale_blocks(tiny_model):
    """Blocks computed for the old prompt keep their old hash; the new prompt's blocks get new ones,
    so a later request with the revised prompt hits only KV that is true of it."""
    old = _prompt(64, 4)
    new = old[:20] + _prompt(44, 5)
    core = make_core(tiny_model, max_num_batched_tokens=64, block_size=16)
    core.open_request(req("a", old, greedy(2)))
    _steps(core, 1)
    core.replace_prompt("a", new)
    core.seal_prompt("a")
    run_all(core)
    core.add_request(req("b", new + [7], greedy(6, logprobs=3)))
    out = run_all(core)["b"]
    assert out[-1].metrics.prefix_hit_tokens == 64
    _assert_same(out, _whole(tiny_model, new + [7], greedy(6, logprobs=3), block_size=16))


def test_abort_of_open_prompt_frees_everything(tiny_model):
    core = make_core(tiny_model, num_kv_blocks=32, max_num_batched_tokens=32, enable_prefix_caching=False)
    core.open_request(req("x", _prompt(50, 6), greedy(4)))
    core.open_request(req("y", _prompt(3, 7), greedy(4)))
    _steps(core, 3)
    assert core.pool.num_free < 32
    assert core.abort("x").finish_reason == "abort"
    core.abort("y")
    core.check_no_leaks()
    assert core.pool.num_free == 32 and not core.has_work()
    with pytest.raises(RequestRejected, match="no request"):
        core.append_prompt("x", [5])


def test_bad_chunks_get_clear_errors(tiny_model):
    core = make_core(tiny_model)
    core.open_request(req("z", [5, 6, 7], greedy(4)))
    with pytest.raises(RequestRejected, match="outside the vocabulary"):
        core.append_prompt("z", [999])
    with pytest.raises(RequestRejected, match="exceeds the model's context"):
        core.append_prompt("z", [5] * 600)
    core.seal_prompt("z")
    with pytest.raises(RequestRejected, match="sealed"):
        core.replace_prompt("z", [5])
    run_all(core)
    core.check_no_leaks()


def test_idle_open_prompt_is_preempted_first_under_pressure_and_still_exact(tiny_model):
    """A pool too small for both: the caught-up open prompt gives its blocks to the running one."""
    idle_ids, busy_ids = _prompt(60, 8), _prompt(70, 9)
    sp = greedy(20, logprobs=3)
    core = make_core(tiny_model, num_kv_blocks=8, block_size=16, max_num_batched_tokens=64,
                     enable_prefix_caching=False)
    idle = core.open_request(req("idle", idle_ids, sp))
    _steps(core, 1)
    assert idle.num_computed_tokens == 59
    core.add_request(req("busy", busy_ids, sp))
    outs = run_all(core)
    assert idle.metrics.preemptions >= 1 and "idle" not in outs
    _assert_same(outs["busy"], _whole(tiny_model, busy_ids, sp, block_size=16))
    core.seal_prompt("idle")
    _assert_same(run_all(core)["idle"], _whole(tiny_model, idle_ids, sp, block_size=16))
    core.check_no_leaks()


async def _collect(stream):
    return [o async for o in stream]


def test_engine_open_text_chunks_cut_mid_word_equal_whole_text(default_model):
    """Text chunks are re-tokenized as a whole, so the final ids (and outputs) equal the whole text's."""
    from tether.engine import Request, SamplingParams

    question = "Answer from the context. What does the crawler fetch first?\nContext:\n"
    passages = ["The crawler fetches the seed page first, then ", "follows links breadth-fir",
                "st; pages that time out are retried once.", " Robots.txt is always respected."]
    revised = "The crawler respects robots.txt, then fetches the seed page."
    sp = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, logprobs=3)

    async def run():
        # no prefix caching: the whole-prompt reference must not reuse the streamed KV
        engine = Engine(EngineConfig(num_kv_blocks=128, max_num_batched_tokens=32, enable_prefix_caching=False),
                        hf_model=default_model.hf_model, tokenizer=default_model.tokenizer)
        try:
            stream = engine.open(Request(messages=[{"role": "user", "content": question}], sampling=sp))
            for p in passages:
                await stream.append(p)
                await asyncio.sleep(0.05)  # the step loop prefills between chunks
            appended = await _collect_after_seal(stream)
            upd = engine.open(Request(messages=[{"role": "user", "content": question}], sampling=sp))
            await upd.append("".join(passages))
            while engine.core.has_work():  # prefilled up to the held-back last token
                await asyncio.sleep(0.01)
            lost = await upd.replace(question + revised)
            updated = await _collect_after_seal(upd)
            whole = [[o async for o in engine.generate(Request(messages=[{"role": "user", "content": question + t}],
                                                               sampling=sp))] for t in ("".join(passages), revised)]
            assert engine.core.stats() and not engine.core.seqs
            return appended, updated, lost, whole
        finally:
            await engine.close()

    async def _collect_after_seal(stream):
        stream.seal()
        return await _collect(stream)

    appended, updated, lost, whole = asyncio.run(run())
    _assert_same(appended, whole[0])
    _assert_same(updated, whole[1])
    assert lost > 0 and updated[-1].metrics.invalidated_tokens == lost
    assert "".join(o.text for o in appended) == "".join(o.text for o in whole[0])


def test_engine_open_rejects_wrong_chunk_kinds(tiny_model):
    async def run():
        engine = Engine(EngineConfig(num_kv_blocks=32), hf_model=tiny_model)
        try:
            stream = engine.open(req("ids", [5, 6, 7], greedy(3)))
            with pytest.raises(RequestRejected, match="append token ids"):
                await stream.append("text")
            await stream.append([8, 9])
            stream.seal()
            outs = await _collect(stream)
            with pytest.raises(RequestRejected, match="sealed or finished"):
                await stream.append([1])
            engine.core.check_no_leaks()
            return outs
        finally:
            await engine.close()

    outs = asyncio.run(run())
    core = make_core(tiny_model)
    core.add_request(req("w", [5, 6, 7, 8, 9], greedy(3)))
    assert tokens(outs) == tokens(run_all(core)["w"])


@pytest.mark.parametrize("policy", ["fcfs", "lcas", "mcps"])
def test_partial_prompt_policies_serve_a_mix_exactly(tiny_model, policy):
    """Open and whole prompts under each registered policy, in a small pool."""
    assert policy in QUEUE_POLICIES.names()
    sp = greedy(6, logprobs=2)
    prompts = {f"r{i}": _prompt(30 + 9 * i, 20 + i) for i in range(4)}
    core = make_core(tiny_model, num_kv_blocks=12, block_size=16, max_num_batched_tokens=32,
                     queue_policy=policy, enable_prefix_caching=False)
    for rid in ("r0", "r2"):
        core.open_request(req(rid, prompts[rid][:10], sp))
    for rid in ("r1", "r3"):
        core.add_request(req(rid, prompts[rid], sp))
    early = _steps(core, 3)
    assert all(o.request_id in ("r1", "r3") for o in early)  # nothing sampled for the open prompts
    for rid in ("r0", "r2"):
        core.append_prompt(rid, prompts[rid][10:])
        core.seal_prompt(rid)
    outs = run_all(core)
    for o in reversed(early):
        outs[o.request_id].insert(0, o)
    for rid, ids in prompts.items():
        _assert_same(outs[rid], _whole(tiny_model, ids, sp, block_size=16))
    core.check_no_leaks()


def test_lcas_puts_sealed_prompts_before_open_ones(tiny_model):
    core = make_core(tiny_model, queue_policy="lcas")
    a = core.open_request(req("a", [5] * 8, greedy(2)), arrival_time=0.0)
    b = core.open_request(req("b", [6] * 8, greedy(2)), arrival_time=1.0)
    core.seal_prompt("b", now=2.0)
    core.append_prompt("a", [7], now=3.0)
    assert sorted([a, b], key=core.scheduler.policy.key) == [b, a]
    mc = make_core(tiny_model, queue_policy="mcps").scheduler.policy
    a.num_computed_tokens, b.num_computed_tokens = 3, 7
    assert sorted([a, b], key=mc.key) == [b, a]


@pytest.mark.parametrize("copy_s,choice", [(1e-9, "host"), (10.0, "recompute")])
def test_idle_prompt_goes_to_host_tier_or_recompute_by_measured_cost(tiny_model, copy_s, choice):
    """With cheap copies the preempted idle prompt's blocks come back from the host tier; with dear
    ones they are recomputed. Either way the outputs equal the whole prompt's."""
    idle_ids, busy_ids = _prompt(60, 8), _prompt(70, 9)
    sp = greedy(20, logprobs=3)
    core = make_core(tiny_model, num_kv_blocks=8, block_size=16, max_num_batched_tokens=64,
                     host_tier="programs", host_kv_blocks=16)
    core.runner._s_per_copied_block, core.runner._s_per_token = copy_s, 1e-3  # as if measured
    core.open_request(req("idle", idle_ids, sp))
    _steps(core, 1)
    core.add_request(req("busy", busy_ids, sp))
    outs = run_all(core)
    assert core.scheduler.counters[f"idle_parked_{choice}"] >= 1
    core.seal_prompt("idle")
    idle_out = run_all(core)["idle"]
    assert (core.kv.counters["host_hit_tokens"] > 0) == (choice == "host")
    _assert_same(idle_out, _whole(tiny_model, idle_ids, sp, block_size=16))
    _assert_same(outs["busy"], _whole(tiny_model, busy_ids, sp, block_size=16))
    core.check_no_leaks()


def test_chunk_arrival_schedules_have_the_published_shapes():
    from tether.engine.chunk_arrivals import corpus_passages, synth_queries

    passages = corpus_passages("word " * 2000, words=10)
    for kind in ("append", "update"):
        qs = synth_queries(kind, rate=2.0, n=20, passages=passages, seed=1)
        assert all(a.arrival < b.arrival for a, b in zip(qs, qs[1:]))
        for q in qs:
            assert 8 <= len(q.events) <= 32 and q.events[-1].time <= 3.0
            assert all(a.time <= b.time for a, b in zip(q.events, q.events[1:]))
            assert [len(e.content) for e in q.events] == list(range(1, len(q.events) + 1))
        ops = {e.op for q in qs for e in q.events}
        assert ops == ({"append"} if kind == "append" else {"append", "replace"})
    with pytest.raises(ValueError, match="kind must be"):
        synth_queries("crawl", 1.0, 1, passages)


def test_open_prompt_waits_for_a_minimum_chunk_then_seal_flushes_the_rest(tiny_model):
    final = _prompt(50, 11)
    sp = greedy(5, logprobs=2)
    core = make_core(tiny_model, max_num_batched_tokens=64)
    core.scheduler.open_min_chunk = 16
    seq = core.open_request(req("m", final[:10], sp))
    assert not core.has_work() and _steps(core, 2) == [] and seq.num_computed_tokens == 0
    core.append_prompt("m", final[10:40])
    _steps(core, 2)
    assert seq.num_computed_tokens == 39 and not core.has_work()
    core.append_prompt("m", final[40:])  # 10 more: below the minimum, so it waits for the seal
    assert not core.has_work()
    core.seal_prompt("m")
    _assert_same(run_all(core)["m"], _whole(tiny_model, final, sp))
    core.check_no_leaks()


def test_open_prompt_untouched_past_the_idle_timeout_is_aborted_and_freed(tiny_model):
    from tether.engine.clock import VirtualClock

    clock = VirtualClock()
    core = make_core(tiny_model, clock=clock, num_kv_blocks=32, enable_prefix_caching=False,
                     stream_idle_timeout_s=30.0)
    core.open_request(req("gone", _prompt(40, 8), greedy(4)))
    core.open_request(req("live", _prompt(20, 9), greedy(4)))
    _steps(core, 3)
    clock.set(25.0)
    core.append_prompt("live", [7, 8])  # touched: its idle time starts again
    clock.set(31.0)
    outs = core.expire_open_prompts()
    assert [(o.request_id, o.finish_reason) for o in outs] == [("gone", "abort")]
    assert "idle for more than 30 s" in outs[0].error
    assert "live" in core.seqs and core.stats()["open_prompts_expired"] == 1
    clock.set(56.0)
    core.seal_prompt("live")  # sealed prompts never expire: they finish on their own
    clock.set(500.0)
    assert core.expire_open_prompts() == []
    assert len(run_all(core)["live"][-1].token_ids) >= 1
    core.check_no_leaks()
    assert core.pool.num_free == 32


def test_engine_aborts_a_stream_its_caller_abandoned(tiny_model):
    async def run():
        engine = Engine(EngineConfig(num_kv_blocks=32, stream_idle_timeout_s=0.3), hf_model=tiny_model)
        try:
            stream = engine.open(req("left", _prompt(30, 10), greedy(3)))
            await stream.append([5, 6])
            for _ in range(100):  # the idle loop checks once a second
                if "left" not in engine.core.seqs:
                    break
                await asyncio.sleep(0.05)
            outs = await _collect(stream)
            engine.core.check_no_leaks()
            return outs, engine.core.pool.num_used
        finally:
            await engine.close()

    outs, held = asyncio.run(run())
    assert outs[-1].finish_reason == "abort" and "idle" in outs[-1].error
    assert held == 0


def test_open_prompt_whose_cache_hit_leaves_only_its_held_back_token_is_not_work():
    """Admission skips such a prompt (nothing to compute before its next chunk), so has_work must
    say no: else a step loop spins on empty steps (and a simulated clock never advances)."""
    from tether.engine import Request, SamplingParams
    from tether.engine.clock import VirtualClock
    from tether.engine.latency_profile import LatencyProfile
    from tether.engine.sim_runner import build_simulated_core

    clock = VirtualClock()
    profile = LatencyProfile(name="t", base_s=0.005, per_seq_s=1e-4, per_token_s=2e-4, per_attn_s=1e-8)
    core = build_simulated_core(EngineConfig(num_kv_blocks=64), profile, clock)
    sp = SamplingParams(max_tokens=2, forced_output_ids=[5, 6])
    ids = list(range(100, 133))  # 33 tokens: two full blocks get cached
    core.add_request(Request(request_id="a", prompt_token_ids=ids, sampling=sp))
    while core.has_work():
        core.step()
    core.open_request(Request(request_id="b", prompt_token_ids=ids, sampling=sp))  # 32 cached + 1 held back
    assert not core.has_work()
    core.append_prompt("b", [7, 8, 9])
    assert core.has_work()
    core.seal_prompt("b")
    done = []
    while core.has_work():
        done += [o for o in core.step() if o.finished]
    assert [o.request_id for o in done] == ["b"] and done[0].metrics.prefix_hit_tokens == 32
    core.check_no_leaks()
