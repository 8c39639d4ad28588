"""Tool executors: time limits and error capture, in-process and on Ray actors."""

from __future__ import annotations

import asyncio
import time

import pytest
import ray

from tether.agents.tools import tool
from tether.runtime.tool_executor import LocalToolExecutor, ToolExecutorPool, ToolResult


class BareTool:
    """A minimal ToolLike (not an SDK Tool): the executor relies on duck typing only."""

    def __init__(self, name: str, behaviour: str, timeout_s: float | None = None):
        self.name, self.behaviour, self.timeout_s = name, behaviour, timeout_s

    async def invoke(self, arguments: dict) -> str:
        if self.behaviour == "raise":
            raise ValueError("bad input")
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        return f"{self.name}:{arguments}"


# -- in-process -----------------------------------------------------------------


async def test_local_ok():
    r = await LocalToolExecutor().run(BareTool("t", "ok"), {"x": 1}, timeout_s=5)
    assert r == ToolResult("t", "t:{'x': 1}", False, r.duration_s)
    assert r.duration_s >= 0


async def test_local_timeout_from_call_tool_and_default():
    ex = LocalToolExecutor(default_timeout_s=0.2)
    start = time.monotonic()
    r = await ex.run(BareTool("slow", "hang"), {}, timeout_s=0.1)
    assert r.is_error and r.content == "error: tool 'slow' timed out after 0.1s"
    assert 0.1 <= r.duration_s < 1 and time.monotonic() - start < 1
    r = await ex.run(BareTool("slow", "hang", timeout_s=0.15), {})
    assert r.content == "error: tool 'slow' timed out after 0.15s"
    r = await ex.run(BareTool("slow", "hang"), {})
    assert r.content == "error: tool 'slow' timed out after 0.2s"
    assert ex.stats() == {"active": 0, "completed": 3}


async def test_local_exception_becomes_error_result():
    r = await LocalToolExecutor().run(BareTool("boom", "raise"), {}, timeout_s=5)
    assert r.is_error and r.content == "error: ValueError: bad input" and r.name == "boom"


async def test_local_sdk_tool_errors_are_flagged():
    @tool
    def add(a: int, b: int) -> int:
        return a + b

    ex = LocalToolExecutor()
    ok = await ex.run(add, {"a": 1, "b": 2}, None)
    assert (ok.content, ok.is_error) == ("3", False) and type(ok.content) is str
    bad = await ex.run(add, {"a": 1, "b": "x"}, None)
    assert bad.is_error and bad.content.startswith("error: invalid arguments for tool 'add': b:")


async def test_local_runs_calls_concurrently():
    @tool
    async def nap(s: float) -> str:
        await asyncio.sleep(s)
        return "rested"

    ex = LocalToolExecutor()
    start = time.monotonic()
    results = await asyncio.gather(*(ex.run(nap, {"s": 0.3}, 5) for _ in range(8)))
    assert time.monotonic() - start < 1.0
    assert [r.content for r in results] == ["rested"] * 8


# -- Ray ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(120)
async def test_pool_on_ray(ray_cluster, tmp_path):
    # Tools are defined here, not at module level, so cloudpickle ships them by
    # value: Ray workers cannot import this test module.
    @tool
    def fail(reason: str) -> str:
        raise RuntimeError(reason)

    @tool(timeout_s=0.5)
    async def stall() -> str:
        await asyncio.sleep(30)
        return "never"

    @tool
    def work(i: int) -> dict:
        import time as _time

        _time.sleep(0.3)  # a blocking tool: runs in the actor's thread pool
        return {"i": i, "square": i * i}

    from tether.agents.builtin_tools import make_shell_tool

    shell = make_shell_tool(str(tmp_path), timeout_s=10)

    pool = ToolExecutorPool(num_actors=2)
    try:
        # Wait for both actors to start (and make them see every tool's code) before timing.
        await asyncio.gather(*(pool.run(work, {"i": 0}, 30) for _ in range(2)))
        start = time.monotonic()
        results = await asyncio.gather(
            pool.run(fail, {"reason": "disk full"}, 10),
            pool.run(stall, {}, None),
            pool.run(shell, {"command": "pwd"}, None),
            *(pool.run(work, {"i": i}, 30) for i in range(8)),
        )
        elapsed = time.monotonic() - start

        failed, stalled, pwd, *worked = results
        assert failed == ToolResult("fail", "error: RuntimeError: disk full", True, failed.duration_s)
        assert stalled.is_error and stalled.content == "error: tool 'stall' timed out after 0.5s"
        assert pwd.content == f"{tmp_path}\n[exit code 0]" and not pwd.is_error
        # The shell ran confined on the actor, and says how (metadata crosses the pool).
        assert pwd.metadata["isolation"] in ("bwrap", "unshare") and pwd.metadata["exit_code"] == 0
        assert [r.content for r in worked] == [f'{{"i":{i},"square":{i * i}}}' for i in range(8)]
        assert not any(r.is_error for r in worked)
        # Eight 0.3 s blocking calls overlap (serially they would take 2.4 s).
        assert elapsed < 2.0, elapsed

        stats = await asyncio.gather(*(a.stats.remote() for a in pool.actors))
        assert all(s["completed"] >= 5 for s in stats)  # least-busy spreads the load
        assert sum(s["completed"] for s in stats) == 13

        # Programs on other actors get the pool by value: a copy reaches the same actors.
        copy = ray.get(ray.put(pool))
        r = await copy.run(work, {"i": 3}, 30)
        assert r.content == '{"i":3,"square":9}'

        # A tool that blocks its actor's event loop defeats the actor's own limit;
        # the pool's outer limit (timeout + grace_s) still answers in time.
        @tool(timeout_s=0.2)
        async def hog() -> str:
            import time as _time

            _time.sleep(1.5)
            return "late"

        pool.grace_s = 0.3
        r = await pool.run(hog, {}, None)
        assert r.is_error and r.content == "error: tool 'hog' timed out after 0.2s"
        assert r.duration_s < 1.2

        # An actor that dies mid-call yields an error result, not an exception.
        pending = asyncio.create_task(pool.run(stall, {}, 30))
        await asyncio.sleep(0.3)
        pool.shutdown()
        r = await pending
        assert r.is_error and r.content.startswith("error: tool executor failed: ")
    finally:
        pool.shutdown()


@pytest.mark.timeout(60)
async def test_cancelling_a_pool_call_stops_the_tool_on_its_actor(ray_cluster):
    @tool
    async def nap(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke up"

    pool = ToolExecutorPool(num_actors=1)
    actor = pool.actors[0]

    async def active() -> int:
        return (await actor.stats.remote())["active"]

    try:
        call = asyncio.create_task(pool.run(nap, {"seconds": 30}, 60))
        deadline = time.monotonic() + 30
        while await active() == 0:
            assert time.monotonic() < deadline, "the tool never started"
            await asyncio.sleep(0.05)
        call.cancel()  # e.g. its program was cancelled
        with pytest.raises(asyncio.CancelledError):
            await call
        deadline = time.monotonic() + 10
        while await active():
            assert time.monotonic() < deadline, "the tool kept running on its actor"
            await asyncio.sleep(0.05)
    finally:
        pool.shutdown()
