"""GenAI-convention spans for the SDK: ``invoke_agent``, ``chat``, ``execute_tool``.

The SDK calls these around its own work (``agents/context.py``, ``agents/agent.py``); each is a
no-op when tracing is off. Attribute names are those of ``opentelemetry-semantic-conventions``
(``gen_ai.*``, ``SEMCONV_VERSION``); tether's own are ``tether.*``. Message contents are recorded
only with ``capture_content`` (``tether demo --trace-content``). Example::

    with agent_span("planner", "prog-1"):
        with chat_span("default", request, "planner") as s:
            outs = await llm.complete(request)
            record_chat(s, outs)
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterator

from opentelemetry.trace import Status, StatusCode

from tether.runtime.tracing import spans


@contextmanager
def agent_span(agent: str, program_id: str | None, program: bool = False) -> Iterator[Any]:
    """``invoke_agent {agent}``: one agent run (``program=True``: the whole program)."""
    with spans.span(f"invoke_agent {agent}", {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "tether", "gen_ai.agent.name": agent,
            "gen_ai.agent.id": program_id if program else None, "gen_ai.conversation.id": program_id,
            "tether.program.id": program_id, "tether.span.kind": "program" if program else "agent"}) as s:
        yield s


@contextmanager
def chat_span(model: str, request: Any, agent: str | None = None) -> Iterator[Any]:
    """``chat {model}`` around one LLM call (``request``: an engine ``Request``)."""
    sp = request.sampling
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "tether", "gen_ai.request.model": model,
             "gen_ai.request.max_tokens": sp.max_tokens, "gen_ai.request.temperature": sp.temperature,
             "gen_ai.request.top_p": sp.top_p, "gen_ai.request.top_k": sp.top_k or None,
             "gen_ai.request.seed": sp.seed, "gen_ai.request.stop_sequences": list(sp.stop) or None,
             "gen_ai.agent.name": agent, "gen_ai.conversation.id": request.program_id,
             "tether.program.id": request.program_id, "tether.turn": request.turn,
             "tether.request.id": request.request_id, "tether.is_last_turn": request.is_last_turn}
    if spans.capture_content() and request.messages is not None:
        attrs["gen_ai.input.messages"] = json.dumps(request.messages, default=str)[:65536]
    with spans.span(f"chat {model}", attrs) as s:
        yield s


def record_chat(s: Any, outs: list[Any], text: str | None = None, tool_calls: int = 0) -> None:
    """The reply's usage and finish reason on the ``chat`` span (no-op for None)."""
    if s is None or not outs:
        return
    last, m = outs[-1], outs[-1].metrics
    attrs = {"gen_ai.response.id": last.request_id, "gen_ai.response.finish_reasons": [last.finish_reason or ""],
             "tether.tool_calls": tool_calls}
    if m is not None:
        attrs.update({"gen_ai.usage.input_tokens": m.prompt_tokens, "gen_ai.usage.output_tokens": m.output_tokens,
                      "gen_ai.usage.cache_read.input_tokens": m.prefix_hit_tokens,
                      "tether.usage.reused_tokens": getattr(m, "reused_tokens", None),
                      "tether.engine.ttft_s": m.ttft, "tether.engine.preemptions": m.preemptions or None})
    if text is not None and spans.capture_content():
        attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "content": text}])[:65536]
    spans.set_attributes(s, attrs)


@contextmanager
def tool_span(name: str, call_id: str | None, key: str | None, agent: str | None, program_id: str | None,
              arguments: Any = None) -> Iterator[Any]:
    """``execute_tool {name}`` around one tool call."""
    attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.call.id": call_id,
             "gen_ai.tool.type": "function", "gen_ai.agent.name": agent, "tether.tool.key": key,
             "tether.program.id": program_id}
    if arguments is not None and spans.capture_content():
        attrs["gen_ai.tool.call.arguments"] = json.dumps(arguments, default=str)[:65536]
    with spans.span(f"execute_tool {name}", attrs) as s:
        yield s


def record_tool(s: Any, content: str, is_error: bool) -> None:
    if s is None:
        return
    s.set_attribute("tether.tool.is_error", is_error)
    if is_error:
        s.set_status(Status(StatusCode.ERROR, content[:200]))
    if spans.capture_content():
        s.set_attribute("gen_ai.tool.call.result", content[:65536])


def mark_error(s: Any, message: str) -> None:
    if s is not None:
        s.set_status(Status(StatusCode.ERROR, message[:500]))
