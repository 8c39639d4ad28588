"""The runtime on a multi-node Ray cluster (several raylets on this machine, ``ray.cluster_utils.Cluster``).

Two "GPU" nodes advertise the custom resource ``tether_gpu`` and get the engine replicas; a "CPU" node
advertises ``tether_cpu`` and gets the program actors, tool executors and the router. The runtime joins
the cluster by address, as on a real one (``Runtime(address=...)``). Replicas serve a tiny random-weight
Llama, so each call takes milliseconds.
"""

from __future__ import annotations

import sys
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from tether.agents import Context, Runtime, tool
from tether.engine.random_model import save_random_checkpoint
from tether.runtime.chat_format import ToolCall

pytestmark = pytest.mark.timeout(300)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0})
    gpu = [c.add_node(**NODE, resources={"tether_gpu": 1}) for _ in range(2)]
    cpu = c.add_node(**NODE, resources={"tether_cpu": 8})
    c.wait_for_nodes()
    c.gpu_nodes, c.cpu_node = gpu, cpu
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def rt(cluster, tmp_path_factory):
    path = save_random_checkpoint(tmp_path_factory.mktemp("tiny"))
    runtime = Runtime(address=cluster.address, model=str(path), tool_timeout_s=5,
                      replica_resources={"tether_gpu": 1}, worker_resources={"tether_cpu": 1},
                      engine={"num_kv_blocks": 256, "max_num_batched_tokens": 256})
    runtime.start()
    yield runtime
    runtime.shutdown()


@tool
def where() -> str:
    """The Ray node this tool ran on."""
    return ray.get_runtime_context().get_node_id()


async def two_turns(ctx: Context, input: str) -> dict:
    first = await ctx.chat([{"role": "user", "content": input}], max_tokens=4, temperature=0)
    again = await ctx.chat([{"role": "user", "content": input}], max_tokens=4, temperature=0)
    return {"cached": again.usage.cached_tokens, "program_node": ray.get_runtime_context().get_node_id(),
            "first": first.text}


async def tool_node(ctx: Context) -> str:
    [res] = await ctx.call_tools([ToolCall("where", {})], tools=[where])
    return res.content


async def long_writer(ctx: Context, input: str) -> str:
    reply = await ctx.chat([{"role": "user", "content": input}], max_tokens=1500, ignore_eos=True, temperature=0)
    return reply.text


def _status(rt) -> dict:
    return ray.get(rt.router.status.remote())


def _node_ids(nodes) -> set[str]:
    return {n.node_id for n in nodes}


def test_replicas_go_to_gpu_nodes_and_programs_and_tools_elsewhere(cluster, rt):
    assert len(rt.replicas) == 2  # one per tether_gpu unit in the cluster (no `replicas` given)
    where_ = rt.placement()
    gpu, cpu = _node_ids(cluster.gpu_nodes), cluster.cpu_node.node_id
    assert set(where_["replicas"]) == gpu  # one replica on each GPU node
    assert set(where_["programs"]) == {cpu} and set(where_["tools"]) == {cpu}
    out = rt.run(two_turns, input="Tell me about paged attention on many nodes.")
    assert out["program_node"] == cpu
    assert rt.run(tool_node) == cpu  # the tool ran on a tool executor on the CPU node


def test_program_turns_stick_to_one_replica_across_nodes(rt):
    before = [s["finished"] for s in rt.stats()["replicas"]]
    outs = [h.result(timeout=120) for h in [rt.submit(two_turns, input=f"question {i} about KV caches, "
                                                      "at some length please") for i in range(6)]]
    # The second turn hit the first one's prefix cache: both turns ran on the same replica (the cache is per node).
    assert all(o["cached"] >= 16 for o in outs), [o["cached"] for o in outs]
    after = [s["finished"] for s in rt.stats()["replicas"]]
    assert all(a - b >= 4 for a, b in zip(after, before))  # the router spread programs over both GPU nodes
    assert _status(rt)["load"] == [0, 0]  # every program ended and left the router


def test_killed_replica_fails_only_its_programs_and_is_restarted_on_a_gpu_node(cluster, rt):
    handles = [rt.submit(long_writer, input=f"tale {i}") for i in range(2)]
    deadline = time.time() + 30
    while rt.stats()["running"] < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert _status(rt)["load"] == [1, 1]
    ray.kill(rt.replicas[0], no_restart=False)
    deadline = time.time() + 30
    while 0 not in _status(rt)["dead"] and time.time() < deadline:
        time.sleep(0.01)
    assert ray.get(rt.router.route.remote("probe")) == 1  # the router stops sending to the dead replica
    ray.get(rt.router.done.remote("probe"))
    results = [h.outcome(timeout=120) for h in handles]
    failed = [r for r in results if not r.ok]
    assert len(failed) == 1 and "engine replica 0 died" in failed[0].error
    assert sum(r.ok for r in results) == 1  # the program on the other node went on

    deadline = time.time() + 120
    while _status(rt)["dead"] and time.time() < deadline:
        time.sleep(0.1)
    assert _status(rt)["dead"] == [] and _status(rt)["replica_restarts"] == 1
    assert set(rt.placement()["replicas"]) == _node_ids(cluster.gpu_nodes)  # restarted on a GPU node
    outs = [h.result(timeout=120) for h in [rt.submit(two_turns, input=f"after {i}") for i in range(4)]]
    assert all(o["first"] is not None for o in outs)
    s = rt.stats()
    assert s["replicas_dead"] == 0 and s["replicas"][0]["finished"] >= 2  # the fresh engine serves again
    deadline = time.time() + 10  # ended programs release their pins; every KV block is free again
    while rt.stats()["kv_blocks_used"] and time.time() < deadline:
        time.sleep(0.05)
    assert rt.stats()["kv_blocks_used"] == 0


def test_lost_gpu_node_moves_its_replica_to_a_new_gpu_node(cluster, rt):
    """A whole node goes away: its replica's programs fail, Ray restarts the replica on a GPU node that joined."""
    spare = cluster.add_node(**NODE, resources={"tether_gpu": 1})
    cluster.wait_for_nodes()
    h = rt.submit(long_writer, input="a tale that outlives its node")
    deadline = time.time() + 30
    while sum(_status(rt)["load"]) < 1 and time.time() < deadline:
        time.sleep(0.02)
    i = _status(rt)["load"].index(1)  # the replica serving it
    [victim] = [n for n in cluster.gpu_nodes if n.node_id == rt.placement()["replicas"][i]]
    cluster.remove_node(victim)
    res = h.outcome(timeout=120)
    assert not res.ok and f"engine replica {i} died" in res.error
    deadline = time.time() + 120
    while (_status(rt)["dead"] or rt.placement()["replicas"][i] != spare.node_id) and time.time() < deadline:
        time.sleep(0.2)
    assert rt.placement()["replicas"][i] == spare.node_id and _status(rt)["dead"] == []
    outs = [h.result(timeout=120) for h in [rt.submit(two_turns, input=f"moved {i}") for i in range(4)]]
    assert all(o["cached"] >= 4 for o in outs)
    assert rt.stats()["replicas"][i]["finished"] >= 2  # the moved replica serves new programs


def test_bad_placement_is_a_clear_error(cluster):
    with pytest.raises(ValueError, match="custom resources"):
        Runtime(address=cluster.address, replica_resources={"GPU": 1})
    with pytest.raises(ValueError, match="positive amounts"):
        Runtime(address=cluster.address, worker_resources={"tether_cpu": 0})
    with pytest.raises(ValueError, match="replicas=9 but the cluster has room for 2"):
        Runtime(address=cluster.address, replicas=9, replica_resources={"tether_gpu": 1}).start()
    with pytest.raises(ValueError, match="no node of the cluster offers"):
        Runtime(address=cluster.address, replica_resources={"tether_tpu": 1}).start()
