"""``Context``: what an agent uses inside a program to chat, call tools and run sub-agents."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from tether.agents.messages import Message, Reply, Usage, as_dicts
from tether.agents.streamed import complete_streamed, streamed_content
from tether.agents.tools import Tool
from tether.engine import Request, SamplingParams
from tether.engine.tool_key import tool_key
from tether.engine.guided import Guided
from tether.runtime.chat_format import (ParsedReply, ToolCall, apply_tools_to_messages, parse_tool_calls,
                                        tool_call_grammar)
from tether.runtime.program import ProgramServices
from tether.runtime.tracing import genai as trace_genai


@dataclass
class AgentStats:
    """Per-agent totals within one program (the demo's table)."""

    turns: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    llm_time_s: float = 0.0
    tool_time_s: float = 0.0


class Context:
    """The program's handle on the runtime, for one agent.

    Example::

        async def researcher(ctx: Context, question: str) -> str:
            reply = await ctx.chat([{"role": "user", "content": question}], tools=[shell], max_tokens=64)
            if reply.tool_calls:
                results = await ctx.call_tools(reply.tool_calls)
            return reply.text
    """

    def __init__(self, services: ProgramServices, agent_name: str = "main",
                 stats: dict[str, AgentStats] | None = None, turn_counter: list[int] | None = None,
                 sub_agent: bool = False):
        self.services = services
        self.program_id = services.program_id
        self.agent_name = agent_name
        self.stats = stats if stats is not None else {}
        self.stats.setdefault(agent_name, AgentStats())
        self._turn = turn_counter if turn_counter is not None else [0]  # shared across sub-agents
        self.sub_agent = sub_agent  # its last turn is not the program's: the parent goes on
        self._tools: dict[str, Tool] = {}
        self.transcript: list[tuple[str, str, str]] = []  # (agent, role, text), for printing

    @property
    def turn(self) -> int:
        return self._turn[0]

    async def chat(self, messages: list[Message | dict[str, Any]], tools: list[Tool] | None = None,
                   tool_choice: Any = None, is_last_turn: bool = False, output_schema: dict[str, Any] | None = None,
                   constrain_tools: bool = True, parallel_tool_calls: bool = False, **sampling: Any) -> Reply:
        """One LLM call for this program; sampling keywords are ``SamplingParams`` fields.

        ``is_last_turn`` tells the engine the program ends after this call; a sub-agent's is ignored.
        With ``tools``, the reply is decoded under a grammar (``constrain_tools``): each ``<tool_call>``
        block is a valid call of one of them (one call per reply unless ``parallel_tool_calls``: small
        models given the choice repeat calls). ``output_schema`` makes the plain answer a JSON value of
        that schema. Example::

            reply = await ctx.chat(msgs, tools=[shell], tool_choice="required", max_tokens=96)
        """
        msgs = as_dicts(messages)
        chunks = streamed_content(msgs)  # the last message's content arrives in chunks (agents/streamed.py)
        if chunks is not None:
            msgs[-1] = {**msgs[-1], "content": ""}
        if tools:
            self._tools.update({t.name: t for t in tools})
            msgs = apply_tools_to_messages(msgs, [t.openai_schema() for t in tools], tool_choice)
        sampling.setdefault("max_tokens", 256)
        if "guided" not in sampling:  # the caller's own grammar wins
            sampling["guided"] = _grammar(tools if constrain_tools else None, tool_choice, parallel_tool_calls,
                                          output_schema)
        request = Request(messages=msgs, sampling=SamplingParams(**sampling), program_id=self.program_id,
                          turn=self.turn, is_last_turn=is_last_turn and not self.sub_agent)
        self._turn[0] += 1
        t0 = time.perf_counter()
        model = getattr(self.services.llm, "model_name", None) or "tether"
        with trace_genai.chat_span(model, request, self.agent_name) as span:
            outs = (await self.services.llm.complete(request) if chunks is None
                    else await complete_streamed(self.services.llm, request, chunks))
            elapsed = time.perf_counter() - t0
            raw = "".join(o.text for o in outs)
            ids = [t for o in outs for t in o.token_ids]
            m = outs[-1].metrics
            parsed = parse_tool_calls(raw, list(self._tools)) if tools else ParsedReply(raw.strip())
            trace_genai.record_chat(span, outs, raw, len(parsed.tool_calls))
        usage = Usage(m.prompt_tokens, m.prefix_hit_tokens, m.output_tokens, m.ttft or 0.0, elapsed)
        st = self.stats[self.agent_name]
        st.turns += 1
        st.prompt_tokens += usage.prompt_tokens
        st.cached_tokens += usage.cached_tokens
        st.output_tokens += usage.output_tokens
        st.llm_time_s += elapsed
        self.transcript.append((self.agent_name, "assistant", raw))
        return Reply(parsed.content, raw, parsed.tool_calls, parsed.errors, ids, outs[-1].finish_reason, usage)

    async def call_tools(self, tool_calls: list[ToolCall], tools: list[Tool] | None = None) -> list[Message]:
        """Run the calls concurrently on the tool executors; returns one ``tool`` message each.

        A tool that raises, times out or gets bad arguments returns an error text:
        the model reads it and the program goes on.
        """
        known = dict(self._tools)
        known.update({t.name: t for t in tools or []})
        if tool_calls:  # first, so the engine's TTL policy pins the KV and times the tools from their start
            await self.services.llm.tool_hint(self.program_id, [tool_key(c.name, c.arguments) for c in tool_calls])
        t0 = time.perf_counter()

        async def one(call: ToolCall) -> Message:
            tool = known.get(call.name)
            with trace_genai.tool_span(call.name, call.id, tool_key(call.name, call.arguments), self.agent_name,
                                       self.program_id, call.arguments) as span:
                if tool is None:
                    text = f"error: unknown tool {call.name!r}; available: {', '.join(sorted(known)) or 'none'}"
                else:
                    res = await self.services.tools.run(tool, call.arguments)
                    text = res.content
                trace_genai.record_tool(span, text, tool is None or res.is_error)
            self.transcript.append((self.agent_name, f"tool:{call.name}", text))
            return Message(role="tool", content=text, name=call.name, tool_call_id=call.id)

        results = list(await asyncio.gather(*(one(c) for c in tool_calls)))
        st = self.stats[self.agent_name]
        st.tool_calls += len(tool_calls)
        st.tool_time_s += time.perf_counter() - t0
        return results

    async def run(self, agent: Any, input: Any = None, **inputs: Any) -> Any:
        """Run ``agent`` (an ``Agent`` or an async function) as a sub-agent of this program."""
        name = getattr(agent, "name", None) or getattr(agent, "__name__", "agent")
        sub = Context(self.services, name, self.stats, self._turn, sub_agent=True)
        sub.transcript = self.transcript
        if input is not None:
            inputs["input"] = input
        if getattr(agent, "traces_itself", False):  # an ``Agent`` opens its own invoke_agent span
            return await agent(sub, **inputs)
        with trace_genai.agent_span(name, self.program_id):
            return await agent(sub, **inputs)

    def stats_dict(self) -> dict[str, dict[str, Any]]:
        return {k: asdict(v) for k, v in self.stats.items()}


def _grammar(tools: list[Tool] | None, tool_choice: Any, parallel: bool,
             output_schema: dict[str, Any] | None) -> Guided | None:
    """The reply's grammar: valid calls of ``tools``, and/or a JSON answer of ``output_schema``."""
    grammar = tool_call_grammar([t.openai_schema() for t in tools], tool_choice or "auto", parallel,
                                output_schema) if tools else None
    if grammar is None and output_schema is not None:
        grammar = Guided(json_schema=output_schema)
    return grammar


def format_tool_errors(errors: list[str]) -> str:
    return "Your tool call could not be parsed:\n" + "\n".join(f"- {e}" for e in errors) + \
        "\nReply again with a well-formed tool call, or answer in plain text."
