"""The runtime on a real local Ray cluster: programs, tools, routing, cancellation, faults.

The replicas serve a tiny random-weight Llama with the default model's
tokenizer, so every path is real and each call takes milliseconds.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
import pytest
import ray

from tether.agents import Agent, Context, ProgramFailed, Runtime, tool
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

