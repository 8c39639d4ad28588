"""The SDK's structured outputs on a real in-process engine: constrained tool calls, ``Agent(output_type=...)``.

The model is random-weight with the default model's vocabulary: it never
writes a tool call or JSON on its own, so what parses is the grammar's doing.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from tether.agents import Agent, Context, tool
from tether.agents.agent import OutputError
from tether.engine import Engine, EngineConfig
from tether.engine.model_loader import load_tokenizer
from tether.runtime.client import LocalClient
from tether.runtime.program import ProgramServices
from tether.runtime.tool_executor import ToolResult
from tiny_model import tiny_llama


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Verdict(BaseModel):
    ok: bool
    score: int = Field(ge=0, le=10)
    label: str = Field(pattern="^(pass|fail)$")


class _Services:
    """An in-process engine as a program's LLM client, and tools run in-process."""

    def __init__(self, engine: Engine):
        self.client = LocalClient(engine, "tiny")
        self.ran: list[tuple[str, dict]] = []

    async def complete(self, request):
        return [o async for o in self.client.generate(request)]

    async def tool_hint(self, program_id, keys):
        pass

    async def run(self, tool, arguments, timeout_s=None):
        self.ran.append((tool.name, arguments))
        return ToolResult(tool.name, str(await tool.invoke(arguments)), False, 0.0)


@pytest.fixture(scope="module")
def engine():
    tok = load_tokenizer("default")
    return Engine(EngineConfig(num_kv_blocks=128, max_num_batched_tokens=128), hf_model=tiny_llama(vocab_size=49152),
                  tokenizer=tok)


def _ctx(engine):
    svc = _Services(engine)
    return Context(ProgramServices("prog-1", svc, svc), "main"), svc


async def test_tool_calls_are_constrained_by_default(engine):
    ctx, svc = _ctx(engine)
    reply = await ctx.chat([{"role": "user", "content": "Add 2 and 3."}], tools=[add], tool_choice="required",
                           max_tokens=60, temperature=1.0, seed=1)
    assert not reply.errors and len(reply.tool_calls) == 1  # one call per reply unless parallel_tool_calls
    [call] = reply.tool_calls
    assert call.name == "add" and set(call.arguments) == {"a", "b"}
    assert all(isinstance(v, int) for v in call.arguments.values())
    [result] = await ctx.call_tools(reply.tool_calls)
    assert result.content == str(call.arguments["a"] + call.arguments["b"])

    free = await ctx.chat([{"role": "user", "content": "Add 2 and 3."}], tools=[add], tool_choice="required",
                          constrain_tools=False, max_tokens=20, temperature=1.0, seed=1)
    assert not free.tool_calls  # the same model unconstrained writes noise


async def test_agent_output_type_returns_a_validated_object(engine):
    ctx, _ = _ctx(engine)
    judge = Agent("judge", "Judge the answer.", output_type=Verdict, max_tokens=200, temperature=1.0, seed=2)
    verdict = await judge(ctx, input="2 + 3 = 5")
    assert isinstance(verdict, Verdict) and 0 <= verdict.score <= 10 and verdict.label in ("pass", "fail")


async def test_agent_output_type_that_never_fits_says_so(engine):
    ctx, _ = _ctx(engine)
    judge = Agent("judge", "Judge.", output_type=Verdict, max_turns=2, max_tokens=3, temperature=0)
    with pytest.raises(OutputError, match="no valid Verdict in 2 turns"):
        await judge(ctx, input="x")
    with pytest.raises(TypeError, match="pydantic BaseModel"):
        Agent("bad", "x", output_type=dict)
