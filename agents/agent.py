"""``Agent``: instructions, tools and the chat-then-call-tools loop."""

from __future__ import annotations

from typing import Any

import pydantic

from tether.agents.context import Context, format_tool_errors
from tether.agents.messages import Message
from tether.agents.tools import Tool
from tether.runtime.tracing.genai import agent_span


class OutputError(ValueError):
    """An agent with an ``output_type`` ended without a reply that validates as one."""


class Agent:
    """An LLM agent: it chats, calls its tools when asked, and stops on a plain answer.

    Example::

        coder = Agent("coder", "You write Python.", tools=[shell], max_turns=4, max_tokens=128)
        answer = rt.run(coder, input="Print the first 5 squares.")

    Sampling keywords (``max_tokens``, ``temperature``, ...) apply to every call, as do
    ``Context.chat``'s (``constrain_tools``, ``parallel_tool_calls``): tool calls are
    decoded under a grammar, so each one parses. With ``output_type`` (a pydantic
    model) the answer is decoded as JSON of its schema and returned validated::

        class Verdict(BaseModel):
            ok: bool
            reason: str = Field(max_length=80)

        judge = Agent("judge", "Judge the code.", output_type=Verdict, max_tokens=64)
        verdict = rt.run(judge, input=code)          # a Verdict
    """

    traces_itself = True  # ``__call__`` opens its ``invoke_agent`` span (``Context.run`` does not add one)

    def __init__(self, name: str, instructions: str, tools: list[Tool] | None = None, max_turns: int = 8,
                 output_type: type[pydantic.BaseModel] | None = None, **sampling: Any):
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.name = name
        self.instructions = instructions
        self.tools = list(tools or [])
        self.max_turns = max_turns
        self.output_type = output_type
        self.sampling = sampling
        if output_type is not None:
            if not (isinstance(output_type, type) and issubclass(output_type, pydantic.BaseModel)):
                raise TypeError(f"output_type must be a pydantic BaseModel subclass, got {output_type!r}")
            self.sampling.setdefault("output_schema", output_type.model_json_schema())

    async def __call__(self, ctx: Context, input: str = "", history: list[Message] | None = None) -> Any:
        with agent_span(self.name, ctx.program_id):
            return await self._loop(ctx, input, history)

    async def _loop(self, ctx: Context, input: str, history: list[Message] | None) -> Any:
        messages: list[Message] = [Message(role="system", content=self.instructions), *(history or []),
                                   Message(role="user", content=str(input))]
        ctx.transcript.append((self.name, "user", str(input)))
        text = ""
        for turn in range(self.max_turns):
            last = turn == self.max_turns - 1
            reply = await ctx.chat(messages, tools=self.tools or None, is_last_turn=last, **self.sampling)
            messages.append(reply.message)
            text = reply.text
            if reply.errors:
                messages.append(Message(role="user", content=format_tool_errors(reply.errors)))
                continue
            if not reply.tool_calls:
                if self.output_type is None:
                    return text
                try:
                    return self.output_type.model_validate_json(text)
                except pydantic.ValidationError as e:  # e.g. cut off by max_tokens: say so, and ask again
                    messages.append(Message(role="user", content=f"Your answer is not a valid "
                                            f"{self.output_type.__name__}: {e.errors()[0]['msg']}. Answer again."))
                    continue
            messages += await ctx.call_tools(reply.tool_calls)
        if self.output_type is not None:
            raise OutputError(f"agent {self.name!r} gave no valid {self.output_type.__name__} in {self.max_turns} "
                              f"turns (last reply: {text[:200]!r}); raise max_tokens or max_turns")
        return text

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, tools={[t.name for t in self.tools]})"
