"""Running tool calls with a time limit, in-process or on Ray actors.

A tool here is anything with a ``name`` and ``async invoke(arguments) -> str``
(the SDK's ``tether.agents.tools.Tool``; the runtime does not import the SDK).
Every call ends in a ``ToolResult``: timeouts and exceptions become error
results, so an agent program never sees a tool raise.

- ``LocalToolExecutor``: the logic, in the caller's event loop (tests, one process).
- ``ToolExecutor``: a Ray async actor wrapping it; many concurrent calls each.
- ``ToolExecutorPool``: several actors, calls dispatched to the least busy.

Example::

    pool = ToolExecutorPool(num_actors=2)
    result = await pool.run(shell_tool, {"command": "ls"}, timeout_s=10)
    print(result.content, result.is_error, result.duration_s)
    pool.shutdown()
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import ray

from tether.runtime import tracing

__all__ = ["LocalToolExecutor", "ToolExecutor", "ToolExecutorPool", "ToolLike", "ToolResult"]


@runtime_checkable
class ToolLike(Protocol):
    """What an executor needs of a tool. ``timeout_s`` (optional attribute) is its default limit."""

    name: str

    async def invoke(self, arguments: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class ToolResult:
    """One finished tool call, as the next LLM turn will read it."""

    name: str
    content: str
    is_error: bool
    duration_s: float
    # What the tool reported beside its text (``ToolOutput.metadata``), e.g. the
    # built-in shell tool's isolation and exit code; None for most tools.
    metadata: dict[str, Any] | None = None


def _error(name: str, message: str, start: float) -> ToolResult:
    return ToolResult(name, f"error: {message}", True, time.monotonic() - start)


def _limit(tool: Any, timeout_s: float | None, default_timeout_s: float | None) -> float | None:
    """The caller's limit, else the tool's own, else the executor's default."""
    for candidate in (timeout_s, getattr(tool, "timeout_s", None), default_timeout_s):
        if candidate is not None:
            return candidate
    return None


class LocalToolExecutor:
    """Runs tool calls in the current event loop.

    Note: on timeout the call's coroutine is cancelled, but a sync tool already
    running in a thread finishes in the background (threads cannot be killed);
    tools that spawn processes should enforce their own limit too, as the
    built-in shell tool does.

    Example::

        result = await LocalToolExecutor().run(add, {"a": 1, "b": 2}, timeout_s=5)
    """

    def __init__(self, default_timeout_s: float | None = None):
        self.default_timeout_s = default_timeout_s
        self.active = 0
        self.completed = 0

    async def run(
        self, tool: ToolLike, arguments: dict[str, Any], timeout_s: float | None = None
    ) -> ToolResult:
        name = str(getattr(tool, "name", type(tool).__name__))
        limit = _limit(tool, timeout_s, self.default_timeout_s)
        start = time.monotonic()
        self.active += 1
        try:
            output = await asyncio.wait_for(tool.invoke(arguments), limit)
        except TimeoutError:
            return _error(name, f"tool '{name}' timed out after {limit:g}s", start)
        except Exception as e:  # a buggy tool must not take the program down
            return _error(name, f"{type(e).__name__}: {e}", start)
        finally:
            self.active -= 1
            self.completed += 1
        # Tools that report failures as text mark them with ``is_error`` (see ToolOutput).
        is_error = bool(getattr(output, "is_error", False))
        metadata = getattr(output, "metadata", None)
        metadata = dict(metadata) if isinstance(metadata, dict) else None
        return ToolResult(name, str(output), is_error, time.monotonic() - start, metadata)

    def stats(self) -> dict[str, int]:
        return {"active": self.active, "completed": self.completed}


@ray.remote(num_cpus=0, max_concurrency=1000)
class ToolExecutor:
    """A Ray actor running many tool calls concurrently (an async actor).

    Tools travel to it pickled (cloudpickle), so they must be picklable.

    Example::

        ex = ToolExecutor.remote(default_timeout_s=60)
        result = await ex.run.remote(tool, {"command": "ls"}, 10)
    """

    def __init__(self, default_timeout_s: float | None = None, max_threads: int = 64):
        self._executor = LocalToolExecutor(default_timeout_s)
        self._max_threads = max_threads
        self._threads_ready = False
        tracing.from_env("tether.tools")

    async def run(
        self, tool: ToolLike, arguments: dict[str, Any], timeout_s: float | None = None, trace: str | None = None
    ) -> ToolResult:
        """``trace``: the caller's W3C traceparent; this actor's ``tether.tool.run`` span is its child."""
        name = str(getattr(tool, "name", type(tool).__name__))
        with tracing.remote_parent(trace), tracing.span(f"tether.tool.run {name}", {"gen_ai.tool.name": name}) as s:
            res = await self._run(tool, arguments, timeout_s)
            tracing.spans.set_attributes(s, {"tether.tool.is_error": res.is_error,
                                             "tether.tool.duration_s": res.duration_s})
            return res

    async def _run(self, tool: ToolLike, arguments: dict[str, Any], timeout_s: float | None) -> ToolResult:
        if not self._threads_ready:
            # Sync tools run via asyncio.to_thread, whose default pool has only
            # cpu_count + 4 threads: too few for many concurrent blocking calls.
            # This actor owns its loop, so it may widen the pool.
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(self._max_threads, thread_name_prefix="tool")
            )
            self._threads_ready = True
        return await self._executor.run(tool, arguments, timeout_s)

    async def stats(self) -> dict[str, int]:
        return self._executor.stats()


class ToolExecutorPool:
    """``num_actors`` ``ToolExecutor`` actors; each call goes to the least busy.

    Needs Ray (``ray.init()``, or Ray starts a local cluster on first use).
    The pool is picklable, so it can be handed to other actors (agent
    programs); each copy balances its own calls over the same actors.
    If an actor dies mid-call, or a call overruns its limit by more than
    ``grace_s`` (a tool blocking the actor's event loop), the caller gets an
    error result rather than an exception.

    Example::

        pool = ToolExecutorPool(num_actors=2, default_timeout_s=60)
        results = await asyncio.gather(*(pool.run(t, args) for t, args in calls))
        pool.shutdown()
    """

    def __init__(
        self,
        num_actors: int = 2,
        *,
        default_timeout_s: float | None = None,
        grace_s: float = 5.0,
        actor_options: dict[str, Any] | None = None,
    ):
        if num_actors < 1:
            raise ValueError("a pool needs at least one actor")
        self.default_timeout_s = default_timeout_s
        self.grace_s = grace_s
        options = actor_options or {}
        self._actors = [
            ToolExecutor.options(**options).remote(default_timeout_s) for _ in range(num_actors)
        ]
        self._busy = [0] * num_actors
        self._turn = 0  # rotates ties so idle actors share the load

    @property
    def actors(self) -> list[Any]:
        return list(self._actors)

    def _pick(self) -> int:
        if not self._actors:
            raise RuntimeError("the tool executor pool is shut down")
        n = len(self._actors)
        offset = self._turn % n
        self._turn += 1
        order = [(offset + k) % n for k in range(n)]
        return min(order, key=lambda i: self._busy[i])

    async def run(
        self, tool: ToolLike, arguments: dict[str, Any], timeout_s: float | None = None
    ) -> ToolResult:
        """Run one call on the least busy actor (this pool's calls in flight)."""
        name = str(getattr(tool, "name", type(tool).__name__))
        limit = _limit(tool, timeout_s, self.default_timeout_s)
        i = self._pick()
        actor = self._actors[i]
        start = time.monotonic()
        self._busy[i] += 1
        try:
            tp = tracing.current_traceparent()  # the caller's span, when tracing is on: parents the executor's span
            ref = actor.run.remote(tool, arguments, limit, *([tp] if tp else []))
            outer = None if limit is None else limit + self.grace_s
            try:
                return await asyncio.wait_for(ref, outer)
            except TimeoutError:
                ray.cancel(ref)
                return _error(name, f"tool '{name}' timed out after {limit:g}s", start)
            except asyncio.CancelledError:  # the caller gave up (program cancelled): stop the tool too
                ray.cancel(ref)
                raise
            except ray.exceptions.RayError as e:
                return _error(name, f"tool executor failed: {type(e).__name__}: {e}", start)
        finally:
            self._busy[i] -= 1

    def shutdown(self) -> None:
        """Kill the actors. Calls still in flight end with an error result."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
