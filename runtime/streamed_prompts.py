"""The streamed-prompt extension endpoints (Stream2LLM over HTTP; docs/streaming.md).

    POST   /v1/streamed_prompts                 {"messages": [...], "sampling": {...}} -> {"id": ...}
    POST   /v1/streamed_prompts/{id}/append     {"text": "..."}   (or {"token_ids": [...]})
    POST   /v1/streamed_prompts/{id}/replace    {"text": "..."}   the whole streamed content so far
    POST   /v1/streamed_prompts/{id}/seal
    GET    /v1/streamed_prompts/{id}/completion server-sent chat.completion.chunk events, then [DONE]
    DELETE /v1/streamed_prompts/{id}            abort and free its KV

The last message's content is the streamed part (its initial text, may be ""):
chunks are prefilled as they arrive; nothing is sampled before ``seal``. Any client serves
them (``client.open``): an in-process engine, or engine replicas through Ray, where the
prompt lives on the replica the router picks. A streamed prompt
that nobody touches for ``idle_timeout_s`` (no append, replace, seal or completion
read under way) is aborted and its KV freed: a client that vanishes mid-stream
does not hold blocks forever.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import APIRouter, Request as HTTPRequest
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.engine import Request, SamplingParams
from tether.runtime.openai_protocol import OpenAIError


class OpenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[dict[str, Any]] = Field(min_length=1)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    model: str | None = None


class ChunkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    token_ids: list[int] | None = None

    @model_validator(mode="after")
    def _one(self) -> "ChunkBody":
        if (self.text is None) == (self.token_ids is None):
            raise ValueError("give exactly one of text or token_ids")
        return self


IDLE_TIMEOUT_S = 120.0


@dataclass
class _Open:
    stream: Any  # engine.stream_api.PromptStream, or runtime.remote_stream.RemoteStream
    last: float = field(default_factory=time.monotonic)  # the client's last call on it
    reading: bool = False  # a completion response is streaming it out: not idle


def streamed_prompt_router(client: Any, model_name: str, idle_timeout_s: float = IDLE_TIMEOUT_S) -> APIRouter:
    """Routes for streamed prompts over ``client.open`` (any ``LLMClient``)."""
    router = APIRouter(prefix="/v1/streamed_prompts")
    streams: dict[str, _Open] = {}
    sweeper: list[asyncio.Task] = []  # at most one: started with the first open prompt, ends with the last

    async def sweep() -> None:
        while streams:
            await asyncio.sleep(min(idle_timeout_s / 4, 5.0))
            now = time.monotonic()
            for sid, entry in list(streams.items()):
                if not entry.reading and now - entry.last > idle_timeout_s:
                    streams.pop(sid, None)
                    await entry.stream.aclose()  # aborts it in the engine: its blocks are freed
        sweeper.clear()

    def get(sid: str):
        entry = streams.get(sid)
        if entry is None:
            raise OpenAIError(f"no streamed prompt {sid!r} (finished, deleted, idle past {idle_timeout_s:g} s "
                              "or never opened)", 404, "id", "not_found")
        entry.last = time.monotonic()
        return entry.stream

    async def parse(http: HTTPRequest, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate_json(await http.body() or b"{}")
        except ValueError as e:
            raise OpenAIError(f"invalid body: {e}", 400) from None

    def rejected(e: ValueError) -> OpenAIError:
        return OpenAIError(str(e), 400)

    @router.post("")
    async def open_prompt(http: HTTPRequest) -> dict[str, Any]:
        body = await parse(http, OpenBody)
        sid = "sp-" + uuid.uuid4().hex
        try:
            streams[sid] = _Open(await client.open(Request(request_id=sid, messages=body.messages,
                                                           sampling=body.sampling)))
        except ValueError as e:
            raise rejected(e) from None
        if not sweeper:
            sweeper.append(asyncio.ensure_future(sweep()))
        return {"id": sid, "object": "streamed_prompt"}

    async def progress(sid: str, stream: Any) -> dict[str, Any]:
        return {"id": sid, **await stream.progress()}  # prompt_tokens, computed_tokens

    @router.post("/{sid}/append")
    async def append(sid: str, http: HTTPRequest) -> dict[str, Any]:
        s, body = get(sid), await parse(http, ChunkBody)
        try:
            await s.append(body.text if body.text is not None else body.token_ids)
        except ValueError as e:
            raise rejected(e) from None
        return await progress(sid, s)

    @router.post("/{sid}/replace")
    async def replace(sid: str, http: HTTPRequest) -> dict[str, Any]:
        s, body = get(sid), await parse(http, ChunkBody)
        try:
            lost = await s.replace(body.text if body.text is not None else body.token_ids)
        except ValueError as e:
            raise rejected(e) from None
        return {**await progress(sid, s), "invalidated_tokens": lost}

    @router.post("/{sid}/seal")
    async def seal(sid: str) -> dict[str, Any]:
        s = get(sid)
        try:
            await s.seal()  # applied (or refused) before the answer
        except ValueError as e:
            raise rejected(e) from None
        return {**await progress(sid, s), "sealed": True}

    @router.get("/{sid}/completion")
    async def completion(sid: str) -> StreamingResponse:
        s = get(sid)
        streams[sid].reading = True
        head = {"id": "chatcmpl-" + sid, "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model_name}

        async def events() -> AsyncIterator[str]:
            try:
                yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                  "finish_reason": None}]})
                async for out in s:
                    m = out.metrics
                    chunk = {**head, "choices": [{"index": 0, "delta": {"content": out.text} if out.text else {},
                                                  "finish_reason": out.finish_reason}]}
                    if m is not None:
                        chunk["usage"] = {"prompt_tokens": m.prompt_tokens, "completion_tokens": m.output_tokens,
                                          "total_tokens": m.prompt_tokens + m.output_tokens,
                                          "invalidated_tokens": m.invalidated_tokens,
                                          "ttft_after_last_chunk_s": m.ttft_after_last_chunk}
                    yield _sse(chunk)
                yield "data: [DONE]\n\n"
            finally:
                streams.pop(sid, None)
                await s.aclose()  # no-op when finished; aborts on a client hang-up

        return StreamingResponse(events(), media_type="text/event-stream")

    @router.delete("/{sid}")
    async def delete(sid: str) -> dict[str, Any]:
        entry = streams.pop(sid, None)
        if entry is None:
            get(sid)
        await entry.stream.aclose()
        return {"id": sid, "deleted": True}

    return router


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"
