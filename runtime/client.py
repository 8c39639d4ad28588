"""How the SDK and the HTTP server reach an engine: in-process or through Ray actors.

Both implement ``LLMClient``, so code above it never knows where the engine runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, AsyncIterator

from tether.engine import Engine, Request, RequestOutput
from tether.engine.stream_api import PromptStream


class LLMClient(ABC):
    """An engine as seen by callers.

    Example::

        client = LocalClient(Engine(EngineConfig(model="default")))
        async for out in client.generate(Request(messages=[...])):
            ...
    """

    model_name: str
    tokenizer: Any
    policy: str | None = None  # the engine's policy preset (``EngineConfig.policy``), when known

    @abstractmethod
    def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        """Stream the request's outputs (see ``Engine.generate``)."""

    async def open(self, request: Request) -> Any:
        """Open a streamed prompt (Stream2LLM): an object with ``PromptStream``'s API (``append``,
        ``replace``, ``seal``, ``progress``, async iteration of outputs, ``aclose``, ``async with``).

        Example::

            async with await client.open(Request(messages=[{"role": "user", "content": "Context: "}])) as s:
                await s.append("a retrieved passage ...")
                s.seal()
                outs = [o async for o in s]
        """
        raise NotImplementedError(f"{type(self).__name__} cannot open streamed prompts")

    @abstractmethod
    async def abort(self, request_id: str) -> None: ...

    @abstractmethod
    async def stats(self) -> dict[str, Any]: ...

    @abstractmethod
    async def tool_hint(self, program_id: str, tool_keys: list[str]) -> None:
        """The program's reply just finished with calls to these tools, which start now (the TTL
        policy's input). Names are tool keys (``tether.engine.tool_key.tool_key``)."""

    @abstractmethod
    async def end_program(self, program_id: str) -> None:
        """The program is over: the engine releases its KV."""


class LocalClient(LLMClient):
    """An in-process ``Engine``."""

    def __init__(self, engine: Engine, model_name: str | None = None):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = model_name or engine.config.model
        self.policy = engine.config.policy

    def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        return self.engine.generate(request)

    async def open(self, request: Request) -> PromptStream:
        return self.engine.open(request)

    async def abort(self, request_id: str) -> None:
        await self.engine.abort(request_id)

    async def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    async def tool_hint(self, program_id: str, tool_keys: list[str]) -> None:
        self.engine.tool_hint(program_id, tool_keys)

    async def end_program(self, program_id: str) -> None:
        self.engine.end_program(program_id)
