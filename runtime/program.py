"""``AgentProgram``: a Ray actor that runs many agent programs concurrently.

The runtime does not know the SDK: a program arrives as an ``entry`` callable
that takes ``ProgramServices`` (the LLM client, the tool pool, the program id)
and returns the program's result. The SDK builds that callable.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import ray

from tether.runtime import tracing
from tether.runtime.replica_client import ReplicaClient
from tether.runtime.tracing.genai import agent_span, mark_error


@dataclass
class ProgramServices:
    """What agent code may use inside a program."""

    program_id: str
    llm: ReplicaClient
    tools: Any  # a ToolExecutorPool


@dataclass
class ProgramResult:
    """A finished program: its value, or why it failed."""

    program_id: str
    ok: bool
    value: Any = None
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.finished - self.started


Entry = Callable[[ProgramServices], Awaitable[Any]]


class AgentProgramImpl:
    def __init__(self, replicas: list, router, tool_pool, tokenizer: Any, model_name: str):
        self.llm = ReplicaClient(replicas, router, tokenizer, model_name)
        self.tools = tool_pool
        self.tasks: dict[str, asyncio.Task] = {}
        self._ending: set[asyncio.Task] = set()  # end_program calls under way (kept: a bare task may be collected)
        tracing.from_env("tether.program")  # the driver's tracing settings reach actors through the environment

    async def run(self, program_id: str, entry: Entry) -> ProgramResult:
        """Run one program to the end; failures and cancellation come back in the result."""
        with agent_span(program_id, program_id, program=True) as span:  # the program's root span
            res = await self._run(program_id, entry)
            if not res.ok:
                mark_error(span, res.error or "failed")
            return res

    async def _run(self, program_id: str, entry: Entry) -> ProgramResult:
        services = ProgramServices(program_id, self.llm, self.tools)
        started = time.time()
        task = asyncio.ensure_future(entry(services))
        self.tasks[program_id] = task
        try:
            value = await task
            return ProgramResult(program_id, True, value, None, started, time.time())
        except asyncio.CancelledError:
            return ProgramResult(program_id, False, None, "cancelled", started, time.time())
        except Exception as e:
            tb = traceback.format_exc(limit=5)
            return ProgramResult(program_id, False, None, f"{type(e).__name__}: {e}", started, time.time(),
                                 {"traceback": tb})
        finally:
            self.tasks.pop(program_id, None)
            # The engine releases the program's KV; the result need not wait for that round trip.
            ending = asyncio.ensure_future(self._end(program_id))
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)

    async def _end(self, program_id: str) -> None:
        try:
            await self.llm.end_program(program_id)
        except Exception:  # a dead replica has nothing left to release
            pass

    async def cancel(self, program_id: str) -> bool:
        task = self.tasks.get(program_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def ping(self) -> int:
        """Running programs; first waits for the KV releases of those that ended (a caller that pings after
        ``run`` sees their blocks freed)."""
        await asyncio.gather(*list(self._ending))
        return len(self.tasks)


AgentProgram = ray.remote(max_concurrency=10_000)(AgentProgramImpl)
