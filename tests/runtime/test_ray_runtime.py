"""The runtime on a real local Ray cluster: programs, tools, routing, cancellation, faults.

The replicas serve a tiny random-weight Llama with the default model's
tokenizer, so every path is real and each call takes milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

import httpx
import pytest
import ray

from tether.agents import Agent, Context, ProgramFailed, Runtime, tool
from tether.agents.streamed import Revised
from tether.engine import Request, RequestRejected, SamplingParams
from tether.engine.random_model import save_random_checkpoint
from tether.runtime.chat_format import ToolCall
from tether.runtime.local_cluster import is_loopback, listening_addresses
from tether.runtime.server import create_app

pytestmark = pytest.mark.timeout(300)
# Agent code defined here travels to the program actors by value (workers cannot import test modules).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    path = save_random_checkpoint(tmp_path_factory.mktemp("tiny"))
    runtime = Runtime(model=str(path), replicas=2, num_cpus=2, tool_timeout_s=5,
                      engine={"num_kv_blocks": 256, "max_num_batched_tokens": 256})
    runtime.start()
    yield runtime
    runtime.shutdown()


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"exploded: {reason}")


@tool(timeout_s=0.5)
async def slow(seconds: float) -> str:
    """Sleeps too long."""
    await asyncio.sleep(seconds)
    return "woke up"


async def chatter(ctx: Context, input: str) -> dict:
    reply = await ctx.chat([{"role": "user", "content": input}], max_tokens=6, temperature=0)
    again = await ctx.chat([{"role": "user", "content": input}], max_tokens=6, temperature=0)
    return {"text": reply.text, "ids": reply.token_ids, "usage": reply.usage, "cached": again.usage.cached_tokens,
            "program": ctx.program_id}


def test_run_returns_the_agents_value_with_usage(rt):
    out = rt.run(chatter, input="Say something about KV caches, please, at some length.")
    assert len(out["ids"]) == 6 and out["usage"].prompt_tokens > 10 and out["usage"].ttft_s > 0
    assert out["cached"] >= 16  # the second turn hit the first one's prefix on the same replica


def test_every_replica_runs_the_policy_and_the_server_reports_it(rt):
    assert rt.policy == "tether"  # the default preset
    assert [r["policy"] for r in ray.get([x.ready.remote() for x in rt.replicas])] == ["tether", "tether"]

    async def ask() -> tuple[dict, dict]:
        transport = httpx.ASGITransport(app=create_app(rt.client()))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return (await http.get("/health")).json(), (await http.get("/v1/models")).json()
    health, models = asyncio.run(ask())
    assert health == {"status": "ok", "policy": "tether"} and models["data"][0]["policy"] == "tether"
    # The server bounds prompts by characters before tokenizing through replicas too.
    assert rt.client().max_model_len == ray.get(rt.replicas[0].ready.remote())["max_model_len"] > 0


def test_many_programs_run_concurrently_across_replicas(rt):
    before = [s["finished"] for s in rt.stats()["replicas"]]
    handles = [rt.submit(chatter, input=f"question {i}") for i in range(8)]
    outs = [h.result(timeout=120) for h in handles]
    assert len({o["program"] for o in outs}) == 8
    after = [s["finished"] for s in rt.stats()["replicas"]]
    assert all(a - b >= 4 for a, b in zip(after, before))  # both replicas served programs


async def tool_user(ctx: Context, input: str, forced: list[int]) -> list[str]:
    # The random-weight model would never write a tool call; force the text it emits.
    reply = await ctx.chat([{"role": "user", "content": input}], tools=[add, explode, slow],
                           forced_output_ids=forced)
    results = await ctx.call_tools(reply.tool_calls)
    results += await ctx.call_tools([ToolCall("explode", {"reason": "test"}), ToolCall("slow", {"seconds": 30}),
                                     ToolCall("add", {"a": "x"}), ToolCall("nope", {})])
    final = await ctx.chat([{"role": "user", "content": input}], max_tokens=3, is_last_turn=True)
    return [m.content for m in results] + [final.finish_reason]


def test_tool_calls_errors_and_timeouts_go_back_to_the_model(rt):
    forced = rt.tokenizer.encode('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>',
                                 add_special_tokens=False)
    hints_before = rt.stats()["tool_hints"]
    t0 = time.perf_counter()
    out = rt.run(tool_user, input="What is 2 + 3?", forced=forced)
    assert out[0] == "5"  # parsed from the model's (forced) <tool_call> and run on a tool executor
    assert out[1].startswith("error: RuntimeError: exploded: test")
    assert "timed out" in out[2]
    assert out[3].startswith("error: invalid arguments for tool 'add'")
    assert out[4].startswith("error: unknown tool 'nope'")
    assert out[5] in ("length", "stop")  # the program went on after every failure
    assert time.perf_counter() - t0 < 20
    s = rt.stats()
    assert s["tool_hints"] - hints_before == 2 and s["programs_ended"] >= 1


def test_agent_class_loop_and_handoff(rt):
    helper = Agent("helper", "You answer briefly.", max_tokens=5, temperature=0)

    async def boss(ctx: Context, input: str) -> str:
        sub = await ctx.run(helper, input=input)
        return f"helper said: {sub}"
    out = rt.submit(boss, input="hi").outcome(timeout=60)
    assert out.ok and out.value.value.startswith("helper said:")
    assert out.value.agents["helper"]["turns"] == 1 and out.value.agents["boss"]["turns"] == 0


async def long_writer(ctx: Context, input: str) -> str:
    reply = await ctx.chat([{"role": "user", "content": input}], max_tokens=1500, ignore_eos=True, temperature=0)
    return reply.text


def _idle(rt) -> bool:
    s = rt.stats()
    return s["running"] == 0 and s["waiting"] == 0 and s["kv_blocks_used"] == 0


def test_cancel_aborts_engine_requests_and_frees_blocks(rt):
    h = rt.submit(long_writer, input="write forever")
    deadline = time.time() + 30
    while rt.stats()["running"] == 0 and time.time() < deadline:
        time.sleep(0.05)
    h.cancel()
    res = h.outcome(timeout=30)
    assert not res.ok and res.error == "cancelled"
    deadline = time.time() + 10
    while not _idle(rt) and time.time() < deadline:
        time.sleep(0.05)
    assert _idle(rt)
    with pytest.raises(ProgramFailed, match="cancelled"):
        h.result()


def test_embedded_cluster_listens_on_loopback_only(rt):
    if not rt._started_ray:
        pytest.skip("Ray was already running in this process: the runtime did not start this cluster")
    node = ray._private.worker._global_node
    listening = listening_addresses()
    assert node.node_ip_address == "127.0.0.1" and node.gcs_address.startswith("127.0.0.1:")
    ports = {port for _, port, _ in listening}
    gcs_port = int(node.gcs_address.rsplit(":", 1)[1])
    assert gcs_port in ports and node.node_manager_port in ports  # the GCS's and the raylet's own servers
    exposed = [(ip, port) for ip, port, _ in listening if not is_loopback(ip.removeprefix("::ffff:"))]
    assert exposed == [], f"the embedded cluster listens beyond loopback: {exposed}"


# ---- streamed prompts (Stream2LLM) through replicas: runtime/remote_stream.py -------------------
HEAD = "Say what the crawler does first, from this context:\n"
FINAL = "It reads robots.txt, then fetches the seed page."
GREEDY = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)


async def _until_prefilled(stream) -> dict:
    """Wait for the replica to prefill what the open prompt has (all but its held-back last token)."""
    for _ in range(3000):
        p = await stream.progress()
        if p["computed_tokens"] == p["prompt_tokens"] - 1:
            return p
        await asyncio.sleep(0.01)
    raise AssertionError(f"not prefilled: {p}")


def _wait_idle(rt, load: list[int]) -> None:
    deadline = time.time() + 30
    while not (_idle(rt) and _router_status(rt)["load"] == load) and time.time() < deadline:
        time.sleep(0.05)
    assert _idle(rt) and _router_status(rt)["load"] == load


def test_a_streamed_prompt_on_a_replica_equals_the_final_prompt_whole_and_frees_its_blocks(rt):
    load = _router_status(rt)["load"]

    async def run():
        client = rt.client()
        stream = await client.open(Request(messages=[{"role": "user", "content": HEAD}], sampling=GREEDY))
        assert sum(_router_status(rt)["load"]) == sum(load) + 1  # an anonymous stream counts while open
        await stream.append("The crawler fet")
        await stream.append("ches the seed page, then follows li")
        await _until_prefilled(stream)
        lost = await stream.replace(HEAD + FINAL)
        with pytest.raises(RequestRejected, match="append text, not token ids") as bad:
            await stream.append([5, 6])  # refused by the replica: the same exception, its own message
        assert "Traceback" not in str(bad.value)
        stream.seal()
        with pytest.raises(RequestRejected, match="sealed or finished"):
            await stream.append("late")
        outs = [o async for o in stream]
        whole = await client.complete(Request(messages=[{"role": "user", "content": HEAD + FINAL}], sampling=GREEDY))
        return outs, whole, lost, stream.invalidated_tokens

    outs, whole, lost, invalidated = asyncio.run(run())
    assert [t for o in outs for t in o.token_ids] == [t for o in whole for t in o.token_ids]
    assert len([t for o in outs for t in o.token_ids]) == 6 and outs[-1].finished
    assert lost > 0 and invalidated == outs[-1].metrics.invalidated_tokens >= lost
    _wait_idle(rt, load)  # blocks freed, and the router's count of it released


async def streamed_reader(ctx: Context, final: str) -> dict:
    llm = ctx.services.llm  # the program's ReplicaClient: the replicas' stats, for the proof below
    base = await llm.stats()
    seen: dict = {}

    async def passages():
        yield "The crawler fetches the seed page first, then follows links breadth-first. " * 2
        for _ in range(3000):  # not sealed yet: the chunk is prefilled only if it was streamed
            now = await llm.stats()
            if now["computed_tokens"] > base["computed_tokens"]:
                seen["computed_before_seal"] = now["computed_tokens"] - base["computed_tokens"]
                break
            await asyncio.sleep(0.01)
        yield Revised(final)  # a re-rank: rolls back what was computed past the common prefix

    kw = dict(max_tokens=6, temperature=0, ignore_eos=True)
    streamed = await ctx.chat([{"role": "user", "content": HEAD}, {"role": "user", "content": passages()}], **kw)
    invalidated = (await llm.stats())["invalidated_tokens"] - base["invalidated_tokens"]
    whole = await ctx.chat([{"role": "user", "content": HEAD}, {"role": "user", "content": final}], **kw)
    return {"streamed": streamed.token_ids, "whole": whole.token_ids, "invalidated": invalidated, **seen}


def test_sdk_streamed_content_is_prefilled_on_the_replica_before_it_is_sealed(rt):
    load = _router_status(rt)["load"]
    out = rt.run(streamed_reader, final=FINAL)
    assert out.get("computed_before_seal", 0) > 0  # wait-for-all would send nothing before the last chunk
    assert out["invalidated"] > 0  # the revision rolled back KV computed while the prompt was open
    assert out["streamed"] == out["whole"] and len(out["streamed"]) == 6
    _wait_idle(rt, load)


def test_streamed_prompt_http_endpoints_through_replicas(rt):
    load = _router_status(rt)["load"]
    sampling = {"max_tokens": 6, "temperature": 0, "ignore_eos": True}

    async def run():
        app = create_app(rt.client(), model_name="tiny")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            r = await http.post("/v1/streamed_prompts", json={"messages": [{"role": "user", "content": HEAD}],
                                                              "sampling": sampling})
            assert r.status_code == 200, r.text
            sid = r.json()["id"]
            for chunk in ("It reads robots.t", "xt, then fetches the seed page."):
                r = await http.post(f"/v1/streamed_prompts/{sid}/append", json={"text": chunk})
                assert r.status_code == 200 and r.json()["prompt_tokens"] > 0, r.text
            r = await http.post(f"/v1/streamed_prompts/{sid}/seal")
            assert r.status_code == 200 and r.json()["sealed"], r.text
            r = await http.post(f"/v1/streamed_prompts/{sid}/append", json={"text": "late"})
            assert r.status_code == 400 and "sealed" in r.json()["error"]["message"]
            body = (await http.get(f"/v1/streamed_prompts/{sid}/completion")).text
            chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
            streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
            assert body.rstrip().endswith("data: [DONE]") and chunks[-1]["usage"]["completion_tokens"] == 6
            whole = await http.post("/v1/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": HEAD + FINAL}], **sampling})
            assert whole.status_code == 200 and streamed == whole.json()["choices"][0]["message"]["content"]
            assert (await http.get(f"/v1/streamed_prompts/{sid}/completion")).status_code == 404

            sid2 = (await http.post("/v1/streamed_prompts", json={
                "messages": [{"role": "user", "content": HEAD}], "sampling": sampling})).json()["id"]
            r = await http.post(f"/v1/streamed_prompts/{sid2}/append", json={"token_ids": [5]})
            assert r.status_code == 400 and "append text" in r.json()["error"]["message"]
            await http.post(f"/v1/streamed_prompts/{sid2}/append", json={"text": "some context " * 20})
            assert (await http.delete(f"/v1/streamed_prompts/{sid2}")).status_code == 200

    asyncio.run(run())
    _wait_idle(rt, load)


def test_an_abandoned_remote_stream_frees_its_blocks(rt):
    load = _router_status(rt)["load"]

    async def run() -> int:
        client = rt.client()
        aborted = (await client.stats())["aborted"]
        sp = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)
        read = await client.open(Request(messages=[{"role": "user", "content": HEAD}], sampling=sp))
        dropped = await client.open(Request(messages=[{"role": "user", "content": HEAD}], sampling=sp))
        await read.append("The crawler fetches pages. " * 10)
        await dropped.append("The crawler fetches pages. " * 10)
        await _until_prefilled(read)
        await _until_prefilled(dropped)
        assert (await client.stats())["kv_blocks_used"] > 0
        read.seal()
        async for out in read:  # left after the first output: the rest is never read
            assert not out.finished
            break
        del dropped  # never sealed nor closed: dropped
        gc.collect()
        for _ in range(600):
            stats = await client.stats()
            if stats["kv_blocks_used"] == 0 and stats["running"] == 0 and stats["waiting"] == 0:
                return stats["aborted"] - aborted
            await asyncio.sleep(0.05)
        raise AssertionError(f"blocks still held: {stats}")

    assert asyncio.run(run()) == 2  # both aborted in their engine
    _wait_idle(rt, load)


def _router_status(rt) -> dict:
    return ray.get(rt.router.status.remote())


def test_a_loopback_load_through_two_replicas_has_no_errors_and_frees_every_block(rt):
    from tether.runtime import bench_serve

    # Runs before the tests that kill replicas (this module's runtime is shared): both must be live.
    assert rt.stats()["replicas_dead"] == 0
    before = [r["finished"] for r in rt.stats()["replicas"]]
    r = bench_serve.run_bench(rt.client(), clients=4, seconds=2, max_tokens=4, model_name="tiny")
    assert r["errors"] == 0 and r["ok"] >= 4, r["error_samples"]
    assert r["kv_blocks_free_after"] and r["engine_after"]["running"] == 0
    served = [r["finished"] - b for r, b in zip(rt.stats()["replicas"], before)]
    assert all(n > 0 for n in served), served  # the router spread the clients over both replicas


def test_killed_replica_is_restarted_and_serves_new_programs(rt):
    """Ray restarts a killed replica: its in-flight program fails clearly, the other goes on, new programs
    avoid it while it restarts and reach it once it is back."""
    assert _router_status(rt)["replica_restarts"] == 0 and rt.stats()["replica_restarts"] == 0
    handles = [rt.submit(long_writer, input=f"tale {i}") for i in range(2)]
    deadline = time.time() + 30
    while rt.stats()["running"] < 2 and time.time() < deadline:
        time.sleep(0.05)
    ray.kill(rt.replicas[0], no_restart=False)
    deadline = time.time() + 30
    while 0 not in _router_status(rt)["dead"] and time.time() < deadline:
        time.sleep(0.01)
    assert ray.get(rt.router.route.remote("probe-while-down")) == 1  # restarting: new programs go elsewhere
    assert 0 in _router_status(rt)["dead"]  # (still down when routed: a restart loads a model)
    ray.get(rt.router.done.remote("probe-while-down"))
    results = [h.outcome(timeout=120) for h in handles]
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1 and "engine replica 0 died: ActorUnavailableError" in failed[0].error
    assert sum(r.ok for r in results) == 1  # the program on the other replica went on

    deadline = time.time() + 120
    while _router_status(rt)["dead"] and time.time() < deadline:
        time.sleep(0.1)
    assert _router_status(rt) == {"dead": [], "replica_restarts": 1, "load": [0, 0]}
    outs = [h.result(timeout=120) for h in [rt.submit(chatter, input=f"after {i}") for i in range(4)]]
    assert all(o["text"] is not None for o in outs)
    s = rt.stats()
    assert s["replica_restarts"] == 1 and s["replicas_dead"] == 0
    assert s["replicas"][0]["finished"] >= 2  # the restarted (fresh) engine served new programs
    merged = asyncio.run(rt.client().stats())  # what the server's /metrics reads
    assert merged["replica_restarts"] == 1


def test_dead_replica_fails_its_programs_and_others_go_on(rt):
    """Runs last: it kills one of the module's two replicas for good."""
    handles = [rt.submit(long_writer, input=f"story {i}") for i in range(2)]
    deadline = time.time() + 30
    while rt.stats()["running"] < 2 and time.time() < deadline:
        time.sleep(0.05)
    ray.kill(rt.replicas[0])
    results = [h.outcome(timeout=120) for h in handles]
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1 and "engine replica 0 died" in failed[0].error
    assert sum(r.ok for r in results) == 1
    assert rt.run(chatter, input="still there?")["text"] is not None  # new programs avoid the dead replica
    assert 0 in _router_status(rt)["dead"] and rt.stats()["replicas_dead"] == 1

