"""The async API the way a user drives it: streaming, concurrency, abort, cancel, bad input."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

from engine_helpers import greedy
from tether.engine import (Engine, EngineConfig, EngineError, ModelNotFoundError, Request, RequestRejected,
                           SamplingParams)


@pytest.fixture
def engine(tiny_model):
    return Engine(EngineConfig(num_kv_blocks=64, max_num_batched_tokens=32), hf_model=tiny_model)


async def collect(engine, request):
    return [o async for o in engine.generate(request)]


async def test_streams_tokens_and_final_metrics(engine):
    outs = await collect(engine, Request(prompt_token_ids=list(range(3, 30)), sampling=greedy(12)))
    assert [len(o.token_ids) for o in outs] == [1] * 12
    assert [o.finished for o in outs] == [False] * 11 + [True]
    last = outs[-1]
    assert last.finish_reason == "length" and last.metrics.output_tokens == 12
    assert last.metrics.ttft is not None and last.metrics.prompt_tokens == 27
    await engine.close()


async def test_concurrent_requests_share_steps(engine):
    reqs = [Request(prompt_token_ids=list(range(3 + i, 20 + i)), sampling=greedy(10)) for i in range(6)]
    results = await asyncio.gather(*(collect(engine, r) for r in reqs))
    assert all(len(r) == 10 for r in results)
    assert engine.stats()["steps"] < 6 * 10  # batched, not one request at a time
    engine.core.check_no_leaks()
    await engine.close()


async def test_abort_and_cancel_free_blocks(engine):
    long = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)
    r1 = Request(prompt_token_ids=[3] * 20, sampling=long)
    r2 = Request(prompt_token_ids=[4] * 20, sampling=long)
    got = []

    async def consume_r1():
        async for o in engine.generate(r1):
            got.append(o)
            if len(got) == 3:
                await engine.abort(r1.request_id)
    task2 = asyncio.create_task(collect(engine, r2))
    await consume_r1()
    assert got[-1].finished and got[-1].finish_reason == "abort"
    await asyncio.sleep(0.05)
    task2.cancel()  # a cancelled caller aborts its request
    with pytest.raises(asyncio.CancelledError):
        await task2
    await asyncio.sleep(0.05)
    s = engine.stats()
    assert s["running"] == 0 and s["waiting"] == 0 and s["kv_blocks_used"] == 0
    engine.core.check_no_leaks()
    await engine.close()


async def test_bad_input_is_refused_clearly_and_others_go_on(engine):
    good = asyncio.create_task(collect(engine, Request(prompt_token_ids=[5, 6, 7], sampling=greedy(20))))
    with pytest.raises(pydantic.ValidationError, match="prompt is empty"):
        Request(prompt_token_ids=[])
    with pytest.raises(pydantic.ValidationError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(pydantic.ValidationError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(pydantic.ValidationError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(RequestRejected, match="exceeds the model's context"):
        await collect(engine, Request(prompt_token_ids=[3] * 600, sampling=greedy(10)))
    with pytest.raises(RequestRejected, match="messages need a tokenizer"):
        await collect(engine, Request(messages=[{"role": "user", "content": "hi"}]))
    assert len(await good) == 20
    await engine.close()


def test_unknown_model_path_names_the_fix(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        Engine(EngineConfig(model=str(tmp_path / "nope")))
    with pytest.raises(ModelNotFoundError, match="config.json"):
        Engine(EngineConfig(model=str(tmp_path)))


async def test_seeded_sampling_is_reproducible_and_forced_outputs_are_exact(engine):
    sp = SamplingParams(max_tokens=16, temperature=1.0, top_k=50, top_p=0.9, seed=42, ignore_eos=True)
    a = await collect(engine, Request(prompt_token_ids=[3, 4, 5], sampling=sp))
    b = await collect(engine, Request(prompt_token_ids=[3, 4, 5], sampling=sp))
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    forced = [9, 8, 7, 2, 6]  # 2 is EOS: forced tokens ignore stop conditions
    outs = await collect(engine, Request(prompt_token_ids=[3, 4], sampling=SamplingParams(
        max_tokens=1, forced_output_ids=forced, logprobs=2)))
    assert [t for o in outs for t in o.token_ids] == forced
    assert all(f in o.logprobs[0] and len(o.logprobs[0]) >= 2 for f, o in zip(forced, outs))
    await engine.close()


async def test_stop_token_ends_request(engine):
    first = (await collect(engine, Request(prompt_token_ids=[3, 4, 5], sampling=greedy(3))))
    stop_tok = first[1].token_ids[0]
    outs = await collect(engine, Request(prompt_token_ids=[3, 4, 5], sampling=SamplingParams(
        max_tokens=30, temperature=0, stop_token_ids=[stop_tok])))
    assert outs[-1].finish_reason == "stop" and outs[-1].token_ids == [stop_tok] and len(outs) == 2
    await engine.close()


async def test_engine_failure_fails_in_flight_requests_and_keeps_serving(engine, monkeypatch):
    runner = engine.core.runner
    real = runner.execute
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated device fault")
        return real(batch)
    monkeypatch.setattr(runner, "execute", flaky)
    with pytest.raises(EngineError, match="simulated device fault"):
        await collect(engine, Request(prompt_token_ids=[3, 4, 5], sampling=greedy(5)))
    assert len(await collect(engine, Request(prompt_token_ids=[3, 4, 5], sampling=greedy(5)))) == 5
    engine.core.check_no_leaks()
    await engine.close()
