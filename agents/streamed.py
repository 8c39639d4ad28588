"""Message content that arrives in chunks (Stream2LLM in the SDK).

A message's ``content`` may be an async iterable of chunks: ``str`` chunks are
appended, a ``Revised(text)`` replaces the streamed content so far (a re-rank).
The chunks are prefilled as they arrive (``llm.open``: ``Engine.open`` in-process,
or on the program's engine replica through Ray, the default under ``Runtime``).
A client without ``open`` gets the final text whole once the iterable ends
(wait-for-all), with the same reply.

Example::

    async def passages():
        yield "first result ..."
        yield Revised("better result ...\\nfirst result ...")
    reply = await ctx.chat([{"role": "user", "content": passages()}], max_tokens=64)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterable

from tether.engine import Request, RequestOutput


@dataclass(frozen=True)
class Revised:
    """A chunk that replaces the whole streamed content so far with ``text``."""

    text: str


def streamed_content(messages: list[dict[str, Any]]) -> AsyncIterable | None:
    """The last message's content if it is an async iterable of chunks; only the last may be."""
    for i, m in enumerate(messages):
        if hasattr(m.get("content"), "__aiter__") and i != len(messages) - 1:
            raise ValueError("only the last message's content may be an async iterable of chunks")
    content = messages[-1].get("content") if messages else None
    return content if hasattr(content, "__aiter__") else None


async def complete_streamed(llm: Any, request: Request, chunks: AsyncIterable) -> list[RequestOutput]:
    """Send ``request`` (its last message's content is the text before the chunks) and the chunks."""
    stream = await _open(llm, request)
    if stream is None:  # a client that cannot stream prompts: wait for all, then send whole
        text = request.messages[-1]["content"]
        async for c in chunks:
            text = c.text if isinstance(c, Revised) else text + _text(c)
        msgs = request.messages[:-1] + [{**request.messages[-1], "content": text}]
        return await llm.complete(request.model_copy(update={"messages": msgs}))
    async with stream:
        head = request.messages[-1]["content"]
        async for c in chunks:
            if isinstance(c, Revised):
                await stream.replace(head + c.text)
            else:
                await stream.append(_text(c))
        stream.seal()
        return [o async for o in stream]


async def _open(llm: Any, request: Request) -> Any:
    """``llm.open(request)``, or None for a client without streamed prompts."""
    if not hasattr(llm, "open"):
        return None
    try:
        return await llm.open(request)
    except NotImplementedError:  # an ``LLMClient`` that does not implement it
        return None


def _text(chunk: Any) -> str:
    if not isinstance(chunk, str):
        raise TypeError(f"a streamed content chunk must be str or Revised, got {type(chunk).__name__}")
    return chunk
