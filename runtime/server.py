"""OpenAI-compatible HTTP server over any ``LLMClient``.

    from tether.engine import Engine, EngineConfig
    from tether.runtime.client import LocalClient
    from tether.runtime.server import serve

    serve(LocalClient(Engine(EngineConfig(model="default"))), port=8000)
    # then: openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x").chat.completions.create(...)

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain and
streamed as server-sent events), ``GET /v1/models`` and ``GET /health`` (both
report the engine's policy preset, ``"policy": "tether"``) and ``GET /metrics``
(Prometheus). Request bodies take the OpenAI fields plus tether's extensions:
``top_k``, ``ignore_eos``, and for agent programs ``program_id``, ``turn``,
``is_last_turn`` and ``tool_hint``.

Tool hints: the engine's KV-pin TTL policy must hear of a tool call when the
tool starts, that is when the reply asking for it finishes. So when a chat
completion with a ``program_id`` finishes with tool calls, the server sends
``client.tool_hint(program_id, [tool_key(name, arguments) for each call])``
(``tether.engine.tool_key``: a shell call is keyed by its command's program)
before the calls reach the client, plain or streamed; a client needs no change.
An explicit ``tool_hint`` in the body (tool names, or ``{"name", "arguments"}``
objects, also keyed by ``tool_key``) replaces the parsed calls and is sent when
this reply finishes, on either endpoint (``[]`` sends none). A reply that fails
or whose client hangs up sends none, and so does a reply with ``is_last_turn``:
its program ends, no turn follows for the engine to keep its KV for.

Tools are rendered into the system prompt and parsed back out of the reply by
``tether.runtime.chat_format``; ``tool_choice`` is an instruction to the model,
not a decoding constraint. Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``: 400 for a request that
cannot be served as given (bad JSON, JSON nested too deeply, a lone surrogate,
a prompt that cannot fit the context), 401 without the API key, 413 for a body
over the size limit, 500 when the engine fails.

Hardening: parsing the body, the chat template and the tokenizer run in
worker threads (at most ``render_threads`` at once), never on the event loop,
so ``/health`` and other requests go on while a big prompt is tokenized; chat
requests reach the client as ``prompt_token_ids``. Before tokenizing, a
prompt whose length in characters alone proves it cannot fit the context is
refused (``PromptRenderer``). Bodies over ``max_body_bytes`` are refused with
413, from ``Content-Length`` before any is read, else as they arrive. With
``api_key`` every route but ``/health``, the OpenAPI docs and (unless
``metrics_need_key``) ``/metrics`` needs ``Authorization: Bearer <key>``.

Request bodies, errors and response fields are in
``tether.runtime.openai_protocol``; Prometheus metrics in
``tether.runtime.server_metrics``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tether.engine import Request, RequestMetrics, RequestOutput
from tether.engine.tool_key import tool_key
from tether.runtime.chat_format import ParsedReply, ToolCall, ToolCallStreamFilter, parse_tool_calls
from tether.runtime.client import LLMClient
from tether.runtime.openai_protocol import (ChatCompletionBody, CompletionBody, GenerationBody, OpenAIError,
                                            PromptRenderer, TokenText, as_openai_error, chat_logprobs,
                                            chat_request, completion_logprobs, completion_request, openai_usage,
                                            parse_body, tool_hint)
from tether.runtime.server_metrics import CountRequests, ServerMetrics

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 2**20  # 8 MiB: far more than any context's worth of text
API_KEY_ENV = "TETHER_API_KEY"  # ``serve``'s API key when none is given
# Open without the API key: liveness, and the OpenAPI schema and its docs pages.
_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


# ---- one generation -----------------------------------------------------------------

@dataclass
class _Generation:
    """What one engine request produced, accumulated from its outputs."""

    started: float = field(default_factory=time.perf_counter)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] = field(default_factory=list)
    finish_reason: str | None = None
    metrics: RequestMetrics | None = None
    first_token_at: float | None = None

    def add(self, out: RequestOutput) -> None:
        if out.token_ids and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.text += out.text
        self.token_ids += out.token_ids
        self.logprobs += out.logprobs or []
        if out.finished:
            self.finish_reason, self.metrics = out.finish_reason, out.metrics

    def usage(self) -> dict[str, Any]:
        return openai_usage(self.metrics, len(self.token_ids))

    def record(self, metrics: ServerMetrics) -> None:
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        metrics.record(self.usage(), ttft, time.perf_counter() - self.started)


# ---- one HTTP request ---------------------------------------------------------------

class _Call:
    """One engine request behind one HTTP request: program hooks, output collection, streaming.

    ``begin`` waits for the first output before any response is sent, so a
    request the engine refuses still gets a 4xx status rather than an error
    inside a 200 stream. When the reply finishes, the tools it calls are
    hinted to the engine before the response ends (see the module doc).
    """

    def __init__(self, client: LLMClient, body: GenerationBody, metrics: ServerMetrics):
        self.client, self.body, self.metrics = client, body, metrics
        self.run = _Generation()
        self._gen: AsyncIterator[RequestOutput] | None = None
        self._first: RequestOutput | None = None
        self._hint = tool_hint(self.body)  # the body's explicit hint (validated before generating)

    async def begin(self, request: Request) -> _Call:
        self._gen = self.client.generate(request)
        try:
            self._first = await self._gen.__anext__()
        except StopAsyncIteration:
            pass
        except Exception as e:
            await self._end()
            raise as_openai_error(e) from None
        return self

    async def respond(self, http: HTTPRequest, fmt: _ChatChunks | _CompletionChunks) -> dict[str, Any]:
        """The whole response body (non-streamed responses)."""
        return fmt.response(await self.collect(http, fmt))

    async def collect(self, http: HTTPRequest, fmt: _ChatChunks | _CompletionChunks) -> _Generation:
        """Run to the end (non-streamed responses); a client that hangs up first aborts the request."""
        run = asyncio.ensure_future(self._collect(fmt))
        watch = asyncio.ensure_future(_hung_up(http))
        try:
            await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            run.cancel()  # no-op when done; else its ``_end`` aborts the engine request
        if not run.done() or run.cancelled():
            await asyncio.gather(run, return_exceptions=True)
            raise OpenAIError("the client disconnected", 499)
        return run.result()

    async def _collect(self, fmt: _ChatChunks | _CompletionChunks) -> _Generation:
        try:
            async for out in self._outputs():
                self.run.add(out)
            await self._finished(fmt.tool_calls(self.run))
        except Exception as e:
            raise as_openai_error(e) from None
        finally:
            await self._end()
        self.run.record(self.metrics)
        return self.run

    def stream(self, fmt: _ChatChunks | _CompletionChunks) -> StreamingResponse:
        """Server-sent events: ``fmt`` shapes the chunks; usage (if asked) and ``[DONE]`` close the stream."""
        opts = self.body.stream_options
        include_usage = bool(opts and opts.include_usage)

        async def events() -> AsyncIterator[str]:
            try:
                for chunk in fmt.opening():
                    yield _sse(chunk)
                async for out in self._outputs():
                    self.run.add(out)
                    for chunk in fmt.on_output(out):
                        yield _sse(chunk)
                closing = fmt.closing(self.run)
                await self._finished(fmt.tool_calls(self.run))  # before the client sees the calls
                for chunk in closing:
                    yield _sse(chunk)
                self.run.record(self.metrics)
                if include_usage:
                    yield _sse(fmt.usage_chunk(self.run.usage()))
                yield "data: [DONE]\n\n"
            except Exception as e:  # the 200 status is sent: report in-band, as OpenAI does
                yield _sse(as_openai_error(e).body(), ascii_only=True)
            finally:
                await self._end()  # also on client disconnect (cancellation): aborts the engine request

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _finished(self, calls: list[ToolCall]) -> None:
        """The reply is complete: tell the engine which tools start now (the body's hint wins)."""
        program_id = self.body.program_id
        if program_id is None or self.body.is_last_turn:  # no next turn to keep the KV for
            return
        keys = self._hint if self._hint is not None else [tool_key(c.name, c.arguments) for c in calls]
        if not keys:
            return
        try:
            await self.client.tool_hint(program_id, keys)
        except Exception:  # advisory: the reply itself succeeded
            log.warning("tool_hint for program %s failed", program_id, exc_info=True)

    async def _outputs(self) -> AsyncIterator[RequestOutput]:
        if self._first is None:
            return
        yield self._first
        if not self._first.finished:
            async for out in self._gen:
                yield out

    async def _end(self) -> None:
        gen, self._gen = self._gen, None
        # Shielded: on a client disconnect the stream's cancel scope would cancel every await here.
        with anyio.CancelScope(shield=True):
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:  # closing the engine's generator aborts a request still running
                await aclose()
            if self.body.is_last_turn and self.body.program_id is not None:
                await self.client.end_program(self.body.program_id)


async def _hung_up(http: HTTPRequest, every_s: float = 0.2) -> None:
    """Returns once the client has disconnected (polled: works under any ASGI server)."""
    while not await http.is_disconnected():
        await asyncio.sleep(every_s)


def _sse(obj: Any, ascii_only: bool = False) -> str:
    """One server-sent event (``ascii_only`` for errors: a message quoting the request may hold a lone
    surrogate, which UTF-8 cannot encode)."""
    return f"data: {json.dumps(obj, ensure_ascii=ascii_only)}\n\n"


# ---- limits and authentication --------------------------------------------------------

class _Guard:
    """ASGI middleware in front of the app: the API key, then the body-size limit.

    Pure ASGI, so it answers before anything reads the body: a request without
    the key is refused unread, and so is one whose ``Content-Length`` is over
    the limit; a body without one (chunked) is counted as the app reads it,
    and reading past the limit raises a 413 ``OpenAIError``.
    """

    def __init__(self, app: Any, api_key: str | None, open_paths: frozenset[str], max_body_bytes: int | None):
        self.app, self.open_paths, self.max_body = app, open_paths, max_body_bytes
        self.key = None if api_key is None else f"Bearer {api_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.key is not None and scope["path"] not in self.open_paths and not self._authorized(scope):
            await _send(send, OpenAIError("missing or incorrect API key: send the header Authorization: Bearer "
                                          "<key>", 401, code="invalid_api_key"),
                        {"WWW-Authenticate": 'Bearer realm="tether"'})
            return
        if self.max_body is not None:
            length = _header(scope, b"content-length")
            if length is not None:
                if not length.isdigit():
                    await _send(send, OpenAIError("the Content-Length header is not a number", 400))
                    return
                if int(length) > self.max_body:
                    await _send(send, self._too_large(int(length)))
                    return
            receive = self._counting(receive)
        await self.app(scope, receive, send)

    def _authorized(self, scope: dict) -> bool:
        given = _header(scope, b"authorization")
        return given is not None and hmac.compare_digest(given, self.key)

    def _too_large(self, size: int | None = None) -> OpenAIError:
        got = f" ({size} bytes)" if size is not None else ""
        return OpenAIError(f"the request body{got} is over this server's limit of {self.max_body} bytes", 413,
                           code="request_too_large")

    def _counting(self, receive: Any) -> Any:
        seen = [0]

        async def counted() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise self._too_large()
            return message
        return counted


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


async def _send(send: Any, error: OpenAIError, headers: dict[str, str] | None = None) -> None:
    """Answer ``error`` straight through ASGI (the app is never called)."""
    body = json.dumps(error.body()).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _context_tokens(client: LLMClient) -> int | None:
    """The engine's context in tokens, where the client can tell (``max_model_len``; a ``LocalClient``'s
    engine); None skips the character-count check."""
    n = getattr(client, "max_model_len", None)
    if n is None:
        n = getattr(getattr(getattr(client, "engine", None), "core", None), "max_model_len", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _with_request_bodies(app: FastAPI, bodies: dict[str, type], secured: bool) -> dict[str, Any]:
    """The OpenAPI schema, with the bodies the handlers parse themselves (and the bearer key, if any)."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for path, model in bodies.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        schemas[model.__name__] = body
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    if secured:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, ops in schema["paths"].items():
            if path not in _OPEN_PATHS:
                for op in ops.values():
                    op["security"] = [{"bearer": []}]
    return schema


# ---- response shapes ----------------------------------------------------------------

class _ChatChunks:
    """``chat.completion`` bodies and ``chat.completion.chunk`` stream chunks for one reply."""

    def __init__(self, head: dict[str, Any], tokens: TokenText, top_logprobs: int | None,
                 tool_names: list[str] | None):
        self.head, self.tokens, self.k, self.tool_names = head, tokens, top_logprobs, tool_names
        self._filter = ToolCallStreamFilter(tool_names) if tool_names is not None else None
        self._reply: ParsedReply | None = None  # the finished reply, parsed once

    def tool_calls(self, run: _Generation) -> list[ToolCall]:
        """The finished reply's tool calls (none when the request offered no tools)."""
        return self._parsed(run).tool_calls if self.tool_names is not None else []

    def _parsed(self, run: _Generation) -> ParsedReply:
        if self._reply is None:
            self._reply = parse_tool_calls(run.text, self.tool_names)
        return self._reply

    def response(self, run: _Generation) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": run.text}
        finish = run.finish_reason
        if self.tool_names is not None:
            reply = self._parsed(run)
            message.update(_tool_message(reply, run.text))
            if reply.tool_calls:
                finish = "tool_calls"
        lp = None if self.k is None else {"content": chat_logprobs(self.tokens, run.token_ids, run.logprobs, self.k)}
        return {**self.head, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": lp, "finish_reason": finish}],
                "usage": run.usage()}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {**self.head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    def opening(self) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def on_output(self, out: RequestOutput) -> list[dict[str, Any]]:
        text = self._filter.feed(out.text) if self._filter else out.text
        lp = None
        if self.k is not None and out.logprobs:
            lp = {"content": chat_logprobs(self.tokens, out.token_ids, out.logprobs, self.k)}
        return [self._chunk({"content": text}, logprobs=lp)] if text or (lp and lp["content"]) else []

    def closing(self, run: _Generation) -> list[dict[str, Any]]:
        chunks, finish = [], run.finish_reason
        if self._filter is not None:
            tail, reply = self._filter.finish()
            self._reply = reply
            if tail:
                chunks.append(self._chunk({"content": tail}))
            if reply.tool_calls:  # sent whole, once the reply is complete
                calls = [{"index": i, **tc.to_openai()} for i, tc in enumerate(reply.tool_calls)]
                chunks.append(self._chunk({"tool_calls": calls}))
                finish = "tool_calls"
        return chunks + [self._chunk({}, finish)]

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "object": "chat.completion.chunk", "choices": [], "usage": usage}


class _CompletionChunks:
    """``text_completion`` bodies and stream chunks for one reply."""

    def __init__(self, head: dict[str, Any], tokens: TokenText, logprobs: int | None):
        self.head, self.tokens, self.k = head, tokens, logprobs
        self._offset = 0  # text offset of the next streamed token, for logprobs

    def response(self, run: _Generation) -> dict[str, Any]:
        lp = None if self.k is None else completion_logprobs(self.tokens, run.token_ids, run.logprobs, self.k)
        return {**self.head, "choices": [{"index": 0, "text": run.text, "logprobs": lp,
                                          "finish_reason": run.finish_reason}], "usage": run.usage()}

    def opening(self) -> list[dict[str, Any]]:
        return []

    def on_output(self, out: RequestOutput) -> list[dict[str, Any]]:
        lp = None
        if self.k is not None and out.logprobs:
            lp = completion_logprobs(self.tokens, out.token_ids, out.logprobs, self.k, self._offset)
            self._offset += sum(len(t) for t in lp["tokens"])
        if not (out.text or lp or out.finished):
            return []
        return [{**self.head, "choices": [{"index": 0, "text": out.text, "logprobs": lp,
                                           "finish_reason": out.finish_reason}]}]

    def closing(self, run: _Generation) -> list[dict[str, Any]]:
        return []

    def tool_calls(self, run: _Generation) -> list[ToolCall]:
        return []  # no tools on this endpoint: only an explicit ``tool_hint`` is sent

    def usage_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": usage}


def _tool_message(reply: ParsedReply, raw_text: str) -> dict[str, Any]:
    """Message fields for a reply parsed for tool calls.

    With calls, ``content`` is the text around them (or null). Without any
    usable call the model's text is kept whole, so nothing it wrote is lost.
    ``tool_call_errors`` (an extension) describes malformed blocks, worded to
    be sent back to the model.
    """
    fields: dict[str, Any] = {}
    if reply.tool_calls:
        fields["content"] = reply.content or None
        fields["tool_calls"] = [tc.to_openai() for tc in reply.tool_calls]
    else:
        fields["content"] = raw_text
    if reply.errors:
        fields["tool_call_errors"] = reply.errors
    return fields


# ---- endpoints ----------------------------------------------------------------------

def create_app(client: LLMClient, model_name: str | None = None, *, api_key: str | None = None,
               metrics_need_key: bool = False, max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
               context_tokens: int | None = None, render_threads: int = 4, ui_root: Path | None = None,
               streamed_prompt_idle_s: float = 120.0) -> FastAPI:
    """The FastAPI app serving ``client`` under OpenAI's routes.

    Example::

        app = create_app(LocalClient(Engine(EngineConfig(model="default"))), api_key="s3cret")
        uvicorn.run(app, port=8000)

    The engine binds to the event loop that first runs a request, so run the
    app in one server loop. ``model_name`` defaults to ``client.model_name``;
    requests may name any model and are answered by this one.

    ``api_key``: every route but ``/health``, the OpenAPI docs and ``/metrics``
    (with ``metrics_need_key``, that one too) answers 401 without
    ``Authorization: Bearer <api_key>``. ``max_body_bytes`` (None: no limit)
    refuses bigger bodies with 413. ``context_tokens`` (default: the client's
    engine's ``max_model_len``, when it can tell) bounds prompts by their
    length in characters before they are tokenized. ``render_threads``: how
    many requests are parsed, rendered and tokenized at once, off the loop. ``ui_root``: serve the
    tracing UI over that trace store at ``/ui`` (``tether.runtime.tracing.ui_server``).
    ``streamed_prompt_idle_s``: a streamed prompt untouched this long is aborted and its KV freed.
    """
    name = model_name or getattr(client, "model_name", None) or "tether"
    policy = getattr(client, "policy", None)  # the engine's policy preset (None: the client cannot tell)
    created = int(time.time())
    metrics = ServerMetrics()
    tokenizer = getattr(client, "tokenizer", None)
    tokens = TokenText(tokenizer)
    renderer = PromptRenderer(tokenizer, context_tokens if context_tokens is not None else _context_tokens(client))
    limiter = anyio.CapacityLimiter(render_threads)
    app = FastAPI(title="tether", description="OpenAI-compatible API over a tether engine")
    app.state.client, app.state.metrics, app.state.model_name = client, metrics, name

    async def off_loop(fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread: JSON parsing, chat templates and tokenizers can take seconds."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    def prepare_chat(raw: bytes) -> tuple[ChatCompletionBody, Request, list[str] | None, int | None]:
        body = parse_body(raw, ChatCompletionBody)
        request, tool_names, k = chat_request(body)
        return body, renderer.chat(request), tool_names, k

    def prepare_completion(raw: bytes) -> tuple[CompletionBody, Request]:
        body = parse_body(raw, CompletionBody)
        return body, completion_request(body, renderer)

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: HTTPRequest, e: OpenAIError) -> Response:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: HTTPRequest, e: StarletteHTTPException) -> Response:
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return OpenAIError(str(e.detail), e.status_code, type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: HTTPRequest, e: Exception) -> Response:
        return as_openai_error(e).response()

    @app.post("/v1/chat/completions")
    async def chat_completions(http: HTTPRequest) -> Any:
        body, request, tool_names, k = await off_loop(prepare_chat, await http.body())
        call = await _Call(client, body, metrics).begin(request)
        head = {"id": "chatcmpl-" + request.request_id, "created": int(time.time()), "model": name,
                "system_fingerprint": None}
        fmt = _ChatChunks(head, tokens, k, tool_names)
        return call.stream(fmt) if body.stream else await call.respond(http, fmt)

    @app.post("/v1/completions")
    async def completions(http: HTTPRequest) -> Any:
        body, request = await off_loop(prepare_completion, await http.body())
        call = await _Call(client, body, metrics).begin(request)
        head = {"id": "cmpl-" + request.request_id, "object": "text_completion", "created": int(time.time()),
                "model": name}
        fmt = _CompletionChunks(head, tokens, body.logprobs)
        return call.stream(fmt) if body.stream else await call.respond(http, fmt)

    def _model_card() -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "tether", "policy": policy}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != name:
            raise OpenAIError(f"model {model_id!r} is not served here; this server serves {name!r}", 404,
                              "model", "model_not_found")
        return _model_card()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "policy": policy}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.update_from_stats(await client.stats())
        return Response(metrics.render(), media_type=metrics.content_type)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            bodies = {"/v1/chat/completions": ChatCompletionBody, "/v1/completions": CompletionBody}
            app.openapi_schema = _with_request_bodies(app, bodies, secured=api_key is not None)
        return app.openapi_schema
    app.openapi = openapi

    if ui_root is not None:
        from tether.runtime.tracing.ui_server import ui_router
        app.include_router(ui_router(ui_root))
    from tether.runtime.streamed_prompts import streamed_prompt_router
    app.include_router(streamed_prompt_router(client, name, streamed_prompt_idle_s))  # Stream2LLM extension: docs/streaming.md
    routes = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}
    open_paths = _OPEN_PATHS if metrics_need_key else _OPEN_PATHS | {"/metrics"}
    app.add_middleware(_Guard, api_key=api_key, open_paths=open_paths, max_body_bytes=max_body_bytes)
    app.add_middleware(CountRequests, metrics=metrics, routes=routes)  # outermost: counts 401s and 413s too
    return app


def serve(client: LLMClient, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
          log_level: str = "info", *, api_key: str | None = None, metrics_need_key: bool = False,
          max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES, ui_root: Path | None = None) -> None:
    """Serve ``client`` over HTTP until interrupted (blocks); ``ui_root``: the trace store ``/ui`` shows.

    ``api_key`` defaults to the environment's ``TETHER_API_KEY`` (unset or empty: no key); see
    ``create_app`` for the options.

    Example::

        serve(LocalClient(Engine(EngineConfig(model="default"))), host="0.0.0.0", port=8000, api_key="s3cret")
    """
    import uvicorn

    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        log.warning("serving on %s without an API key: anyone who reaches it can use the engine "
                    "(set --api-key or %s)", host, API_KEY_ENV)
    app = create_app(client, model_name, api_key=api_key, metrics_need_key=metrics_need_key,
                     max_body_bytes=max_body_bytes, ui_root=ui_root)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
