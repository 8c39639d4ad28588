"""Messages and replies, as agents see them. A later turn (or another agent) reuses
the KV of earlier messages through the engine's prefix cache, which matches the
rendered prompt's tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from tether.runtime.chat_format import ToolCall


class Message(BaseModel):
    """One chat message (OpenAI shape).

    Example::

        Message(role="user", content="List the files.")
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    role: str
    content: str = ""
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            d["name"] = self.name
        if self.tool_calls:
            d["tool_calls"] = self.tool_calls
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        return d


def as_dicts(messages: list[Message | dict[str, Any]]) -> list[dict[str, Any]]:
    return [m.to_openai() if isinstance(m, Message) else dict(m) for m in messages]


@dataclass
class Usage:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float = 0.0
    llm_time_s: float = 0.0


@dataclass
class Reply:
    """What ``ctx.chat`` returns: text outside tool calls, parsed tool calls, usage.

    ``errors`` lists malformed tool calls; the agent loop sends them back to the model.
    """

    text: str
    raw_text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)

    @property
    def message(self) -> Message:
        """The assistant message to append to the history."""
        return Message(role="assistant", content=self.text,
                       tool_calls=[c.to_openai() for c in self.tool_calls] or None)
