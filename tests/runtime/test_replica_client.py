"""``ReplicaClient`` routing and stats merging, with in-process stand-ins for the Ray actors."""

from __future__ import annotations

import asyncio

from tether.engine import Request, RequestOutput
from tether.runtime.replica_client import ReplicaClient, merge_stats
from tether.runtime.router import RouterImpl
from tether.runtime.server_metrics import _STAT_GAUGES


class _Ready:
    """An awaitable that is already done, like an ``ObjectRef`` whose result is in."""

    def __init__(self, value):
        self.value = value

    def __await__(self):
        return self.value
        yield


class _Actor:
    """``actor.method.remote(...)`` runs ``method`` at once; an awaitable result is handed back as is."""

    def __init__(self, impl):
        self.impl = impl

    def __getattr__(self, name):
        method = getattr(self.impl, name)

        def remote(*args):
            out = method(*args)
            return out if hasattr(out, "__await__") else _Ready(out)
        return type("Method", (), {"remote": staticmethod(remote)})


class _Replica:
    """Each ``generate_full`` waits until the test releases it."""

    def __init__(self):
        self.release = asyncio.Event()

    async def _full(self, request):
        await self.release.wait()
        return [RequestOutput(request.request_id, [1], "x", finished=True, finish_reason="stop")]

    def generate_full(self, request):
        return asyncio.ensure_future(self._full(request))


async def test_requests_of_no_program_spread_over_replicas_and_count_until_they_end():
    router, replicas = RouterImpl(2), [_Replica(), _Replica()]
    client = ReplicaClient([_Actor(r) for r in replicas], _Actor(router), None, "m")
    calls = [asyncio.ensure_future(client.complete(Request(prompt_token_ids=[1]))) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert router.load == [1, 1]  # both in flight, one on each replica
    for r in replicas:
        r.release.set()
    assert all(out[-1].finished for out in await asyncio.gather(*calls))
    assert router.load == [0, 0] and router.assignment == {}


def test_merge_stats_sums_every_counter_and_recomputes_ratios():
    a = {"requests": 2, "kv_blocks_cached_free": 3, "pinned_blocks": 4, "active_pins": 1, "prefix_hit_tokens": 10,
         "prefix_query_tokens": 40, "prefix_hit_rate": 0.25, "evicted_tokens": 16, "ttft_p50": 0.5}
    b = {**a, "prefix_hit_tokens": 30, "prefix_hit_rate": 0.75, "ttft_p50": 0.9}
    total = merge_stats([a, {"dead": True, "replica": 1}, b])
    assert total["requests"] == 4 and total["kv_blocks_cached_free"] == 6 and total["pinned_blocks"] == 8
    assert total["active_pins"] == 2 and total["evicted_tokens"] == 32 and total["prefix_query_tokens"] == 80
    assert total["prefix_hit_rate"] == 0.5 and total["ttft_p50"] == 0.5
    assert "replica" not in total and "dead" not in total and len(total["replicas"]) == 3
    assert set(_STAT_GAUGES) <= set(merge_stats([dict.fromkeys(_STAT_GAUGES, 1)]))  # /metrics keeps every gauge


def test_router_leaves_a_dead_replica_out_until_a_new_incarnation_answers():
    router = RouterImpl(2)
    router.seen_alive(0, "a1")
    router.seen_alive(1, "b1")
    router.mark_dead(0)
    assert [router.route(f"p{i}") for i in range(3)] == [1, 1, 1]  # while 0 is down, all go to 1
    router.seen_alive(0, "a2")  # Ray restarted it: a new incarnation answered
    assert router.status() == {"dead": [], "replica_restarts": 1, "load": [0, 3]}
    assert router.route("p3") == 0 and router.route("p0") == 1  # new programs reach it again; old ones stay
    router.seen_alive(0, "a2")
    assert router.status()["replica_restarts"] == 1  # the same incarnation again is no restart


class _Pinged:
    """A replica whose ``ping`` answers from a script: an incarnation, or an exception to raise."""

    def __init__(self, script):
        self.script = list(script)

    def ping(self):
        async def answer():
            step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if isinstance(step, BaseException):
                raise step
            return step
        return answer()


async def test_router_watch_marks_a_dying_replica_dead_then_counts_its_restart():
    from ray.exceptions import ActorUnavailableError
    router = RouterImpl(2)
    down = ActorUnavailableError("the actor was restarted", None)
    replicas = [_Actor(_Pinged(["a1", down, down, "a2"])), _Actor(_Pinged(["b1"]))]
    await router.watch(replicas, ["a1", "b1"], interval_s=0.01)
    seen_dead = False
    for _ in range(200):
        await asyncio.sleep(0.005)
        seen_dead |= router.status()["dead"] == [0]
        if router.status()["replica_restarts"]:
            break
    assert seen_dead and router.status() == {"dead": [], "replica_restarts": 1, "load": [0, 0]}
    for t in router._watchers:
        t.cancel()


async def test_stats_skip_replicas_the_router_knows_are_down_and_report_restarts():
    class _Stats:
        def __init__(self, n):
            self.n = n

        async def stats(self):
            return {"finished": self.n}

        def generate_full(self, request):
            raise AssertionError("not called")
    router = RouterImpl(2)
    router.seen_alive(1, "b1")
    router.seen_alive(1, "b2")
    router.mark_dead(0)
    client = ReplicaClient([_Actor(_Stats(5)), _Actor(_Stats(7))], _Actor(router), None, "m")
    s = await client.stats()
    assert s["finished"] == 7 and s["replicas_dead"] == 1 and s["replica_restarts"] == 1
    assert s["replicas"][0] == {"dead": True, "replica": 0}
