"""``Agent``: instructions, tools and the chat-then-call-tools loop."""

from __future__ import annotations

from typing import Any

from tether.agents.context import Context, format_tool_errors
from tether.agents.messages import Message
from tether.agents.tools import Tool


class Agent:
    """An LLM agent: it chats, calls its tools when asked, and stops on a plain answer.

    Example::

        coder = Agent("coder", "You write Python.", tools=[shell], max_turns=4, max_tokens=128)
        answer = rt.run(coder, input="Print the first 5 squares.")

    Sampling keywords (``max_tokens``, ``temperature``, ...) apply to every call.
    """

    def __init__(self, name: str, instructions: str, tools: list[Tool] | None = None, max_turns: int = 8,
                 **sampling: Any):
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.name = name
        self.instructions = instructions
        self.tools = list(tools or [])
        self.max_turns = max_turns
        self.sampling = sampling

    async def __call__(self, ctx: Context, input: str = "", history: list[Message] | None = None) -> str:
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
                return text
            messages += await ctx.call_tools(reply.tool_calls)
        return text

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, tools={[t.name for t in self.tools]})"
