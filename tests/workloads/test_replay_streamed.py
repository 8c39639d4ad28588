"""Streamed turns in replay: sim mode prefills chunks as they arrive (or waits for all with
--no-stream), reports TTFT after the last chunk, and real mode sends them whole (said so)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from tether import cli
from tether.engine.latency_profile import LatencyProfile
from tether.engine.policies import parse_policies
from tether.workloads.metrics import summarize
from tether.workloads.replay import run_policies
from tether.workloads.replay_common import ReplaySettings, TurnFeeder
from tether.workloads.scaling import scale_trace
from tether.workloads.synth import synthesize
from tether.workloads.synth_streamed import add_chunk_arrivals

PROFILE = LatencyProfile(name="test", base_s=0.005, per_seq_s=1e-4, per_token_s=2e-4, per_attn_s=1e-8)


def _trace(shape: str):
    return scale_trace(add_chunk_arrivals(synthesize(6, seed=3, rate=0.5), shape, seed=3), token_scale=0.2)


def _run(trace, **kw):
    settings = ReplaySettings(**{"kv_blocks": 4096, "max_num_batched_tokens": 256, **kw})
    return run_policies(trace, parse_policies("baseline"), settings, "sim", PROFILE)[0]


@pytest.fixture(scope="module")
def update_runs():
    trace = _trace("update")
    return trace, _run(trace), _run(trace), _run(trace, stream=False)


def test_streamed_replay_is_deterministic_and_waits_less_after_the_last_chunk(update_runs):
    trace, a, b, _ = update_runs
    assert a.turns == b.turns and a.kv_samples == b.kv_samples  # same trace and seed, same numbers
    streamed = [t for t in a.turns if t.last_chunk_s is not None]
    assert len(streamed) == trace.streamed_turns > 0
    for t in streamed:
        assert t.submitted_s < t.last_chunk_s <= t.first_token_s
    s = summarize(a)
    assert s["streamed_turns"] == len(streamed)
    assert s["ttft_after_last_chunk_p50"] < s["ttft_streamed_p50"]
    assert s["ttft_after_last_chunk_p99"] < s["ttft_streamed_p99"]
    assert s["invalidated_tokens"] > 0 and a.engine_stats["invalidated_tokens"] == s["invalidated_tokens"]
    assert a.meta["streamed"]["arm"] == "streamed"


def test_streamed_and_wait_for_all_complete_the_same_work(update_runs):
    _, streamed, _, wait = update_runs

    def key(r):
        return r.program_id, r.turn
    s_turns, w_turns = sorted(streamed.turns, key=key), sorted(wait.turns, key=key)
    assert [key(t) for t in s_turns] == [key(t) for t in w_turns]
    assert [t.output_tokens for t in s_turns] == [t.output_tokens for t in w_turns]
    assert [t.prompt_tokens for t in s_turns] == [t.prompt_tokens for t in w_turns]  # the same final prompts
    for s, w in zip(s_turns, w_turns):
        assert (s.last_chunk_s is None) == (w.last_chunk_s is None)
    ws = summarize(wait)
    assert ws["invalidated_tokens"] == 0 and wait.meta["streamed"]["arm"] == "wait-for-all"
    # prefilled while the chunks arrived, a streamed turn has less left after the last one
    assert summarize(streamed)["ttft_after_last_chunk_p50"] < ws["ttft_after_last_chunk_p50"]


def test_append_shape_invalidates_nothing_and_plain_traces_report_no_stream_keys():
    run = _run(_trace("append"))
    s = summarize(run)
    assert s["streamed_turns"] > 0 and s["invalidated_tokens"] == 0
    plain = summarize(_run(scale_trace(synthesize(3, seed=3), token_scale=0.2)))
    assert "streamed_turns" not in plain and "ttft_after_last_chunk_p50" not in plain


def test_a_first_turn_streams_once_its_first_chunk_arrives():
    trace = _trace("append")
    first = trace.programs[0].turns[0]
    chunks = [{"time_s": 0.5, "op": "append", "tokens": first.append_tokens // 2},
              {"time_s": 1.0, "op": "append", "tokens": first.append_tokens}]
    turns = [first.model_validate({**first.model_dump(), "append_chunks": chunks}), *trace.programs[0].turns[1:]]
    one = trace.model_copy(update={"programs": [trace.programs[0].model_copy(update={"turns": turns})]})
    for stream in (True, False):
        run = _run(one, stream=stream)
        t0 = next(t for t in run.turns if t.turn == 0)
        assert t0.last_chunk_s == pytest.approx(t0.submitted_s + 1.0) and t0.first_token_s > t0.last_chunk_s


def test_cli_synth_streamed_then_replay_both_arms(tmp_path, capsys):
    trace = tmp_path / "s.jsonl"
    assert cli.main(["trace", "synth", "--programs", "3", "--seed", "1", "--rate", "1", "--streamed", "update",
                     "--out", str(trace)]) == 0
    assert "streamed" in capsys.readouterr().out
    profile = PROFILE.save(tmp_path / "profile.json")
    base = ["replay", str(trace), "--mode", "sim", "--kv-blocks", "2048", "--token-scale", "0.1",
            "--profile", str(profile)]
    summaries = {}
    for arm, extra in (("streamed", []), ("wait-for-all", ["--no-stream"])):
        out_dir = tmp_path / arm
        assert cli.main(base + extra + ["--out", str(out_dir)]) == 0
        out = capsys.readouterr().out
        assert "TTFT after last chunk p50 (ms)" in out and f"replayed {arm}" in out
        res = json.loads((out_dir / "results.json").read_text())
        assert res["meta"]["streamed"]["arm"] == arm and res["meta"]["settings"]["stream"] == (arm == "streamed")
        summaries[arm] = res["policies"]["baseline"]
    assert summaries["streamed"]["output_tokens"] == summaries["wait-for-all"]["output_tokens"]
    assert summaries["streamed"]["streamed_turns"] == summaries["wait-for-all"]["streamed_turns"] > 0


def test_cli_synth_refuses_a_bad_share(tmp_path, capsys):
    assert cli.main(["trace", "synth", "--programs", "1", "--streamed", "append", "--streamed-share", "2",
                     "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "share must be in [0, 1]" in capsys.readouterr().err


def test_real_mode_sends_a_streamed_turn_whole_at_its_last_chunk():
    from tether.workloads.replay_real import TurnPlan, _plan, replay_program

    trace = _trace("append")
    pi = next(i for i, p in enumerate(trace.programs) if any(t.append_chunks for t in p.turns))
    plan = _plan(TurnFeeder(trace), pi, time_scale=0.01)
    waits = [p.chunk_wait_s for p in plan]
    turns = trace.programs[pi].turns
    assert waits == [None if t.append_chunks is None else t.append_chunks[-1].time_s * 0.01 for t in turns]

    class FakeLLM:
        async def complete(self, request):
            out = request.sampling.forced_output_ids
            m = SimpleNamespace(ttft=0.0, decode_time=0.0, prompt_tokens=len(request.prompt_token_ids),
                                prefix_hit_tokens=0, output_tokens=len(out), preemptions=0)
            return [SimpleNamespace(token_ids=list(out), metrics=m)]

        async def tool_hint(self, program_id, names):
            pass

    services = SimpleNamespace(llm=FakeLLM(), program_id="p")
    plan = [TurnPlan([1, 2], [3], None, 0.0), TurnPlan([4], [5], None, 0.0, chunk_wait_s=0.05)]
    first, second = asyncio.run(replay_program(services, plan, 0.0))
    assert first.last_chunk_s is None
    assert second.last_chunk_s - second.submitted_s >= 0.05 and second.first_token_s >= second.last_chunk_s
