"""The async engine, the core's front end: ``async for out in engine.generate(request)``.

The front end renders chat messages with the model's template, detokenizes
outputs and ends requests at stop strings; the core sees token ids only. One
background task runs ``EngineCore.step`` in a worker thread (torch releases
the GIL, so the event loop stays responsive) and routes outputs to
per-request streams.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
from pathlib import Path
from typing import Any, AsyncIterator

import torch

from tether.engine.clock import Clock
from tether.engine.config import EngineConfig
from tether.engine.core import EngineCore
from tether.engine.cpu_tuning import keep_freed_memory
from tether.engine.detokenizer import Detokenizer
from tether.engine.events import Listener
from tether.engine.model import build_model
from tether.engine.model_loader import load_model
from tether.engine.request import Request, RequestOutput, RequestRejected, check_request
from tether.engine.runner import ModelRunner
from tether.engine.stream_api import PromptStream

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineError(RuntimeError):
    """The engine failed while serving this request (the message says why)."""


def _eos_ids(hf_model, tokenizer) -> tuple[int, ...]:
    ids: set[int] = set()
    for src in (getattr(hf_model, "generation_config", None), hf_model.config):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(e, int):
            ids.add(e)
        elif e:
            ids.update(e)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))


def kv_block_bytes(num_layers: int, block_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    return 2 * num_layers * block_size * num_kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def build_core(config: EngineConfig, hf_model: torch.nn.Module, tokenizer: Any = None,
               clock: Clock | None = None) -> EngineCore:
    """An ``EngineCore`` running ``hf_model`` (already loaded) through our paged forward."""
    model = build_model(hf_model)
    if model.device.type == "cpu":
        keep_freed_memory()
    if config.block_size & (config.block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {config.block_size}")
    num_blocks = config.num_kv_blocks
    if num_blocks is None:
        per_block = kv_block_bytes(model.num_layers, config.block_size, model.num_kv_heads, model.head_dim,
                                   model.dtype)
        num_blocks = max(1, int(config.kv_cache_memory_gb * 2**30 // per_block))
    model_len = hf_model.config.max_position_embeddings
    if config.max_model_len is not None:
        if config.max_model_len > model_len:
            raise ValueError(f"max_model_len {config.max_model_len} exceeds the model's {model_len}")
        model_len = config.max_model_len
    runner = ModelRunner(model, num_blocks, config.block_size, seed=config.seed,
                         host_blocks=config.host_blocks(num_blocks))
    runner.sampler.set_tokenizer(tokenizer)  # guided decoding compiles grammars for this vocabulary
    return EngineCore(config, runner, num_blocks, model_len, hf_model.config.vocab_size,
                      _eos_ids(hf_model, tokenizer), clock)


def chat_prompt_text(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """``messages`` rendered by the model's chat template, ready for the assistant's reply."""
    if tokenizer is None:
        raise RequestRejected("messages need a tokenizer; this engine has none, pass prompt_token_ids")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The prompt token ids of ``messages`` under the model's chat template (the template adds the
    special tokens itself)."""
    text = chat_prompt_text(tokenizer, messages)
    return tokenizer.encode(text, add_special_tokens=False)


def chat_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Prompt ids of ``messages`` and each text content's [start, end) token span (the
    segments whose KV later prompts may reuse)."""
    return _ids_and_spans(tokenizer, chat_prompt_text(tokenizer, messages), messages)


def content_spans(tokenizer: Any, text: str, messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The token spans of ``messages``' text contents in ``text``, their rendered prompt.

    Example::

        spans = content_spans(tok, chat_prompt_text(tok, msgs), msgs)   # [(start, end), ...]
    """
    return _ids_and_spans(tokenizer, text, messages)[1]


def _ids_and_spans(tokenizer: Any, text: str, messages: list[dict[str, Any]]
                   ) -> tuple[list[int], list[tuple[int, int]]]:
    if not getattr(tokenizer, "is_fast", False):  # no character offsets: no spans, outputs still serve
        return tokenizer.encode(text, add_special_tokens=False), []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    starts = [a for a, _ in offsets]
    spans, cursor = [], 0
    for m in messages:
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        at = text.find(content, cursor)
        if at < 0:  # the template rewrote it (stripped, say): no span for this message
            continue
        cursor = at + len(content)
        first = last = bisect.bisect_left(starts, at)
        while last < len(offsets) and offsets[last][1] <= cursor:
            last += 1
        if last > first:
            spans.append((first, last))
    return ids, spans


class _Stream:
    """One request in flight in the front end: its output queue and detokenizer."""

    def __init__(self, detok: Detokenizer):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.detok = detok


class Engine:
    """One inference replica with an asyncio API.

    Example::

        engine = Engine(EngineConfig(model="default"))
        req = Request(messages=[{"role": "user", "content": "Hi!"}], sampling=SamplingParams(max_tokens=32))
        async for out in engine.generate(req):
            print(out.text, end="")
    """

    def __init__(self, config: EngineConfig | None = None, *, hf_model: torch.nn.Module | None = None,
                 tokenizer: Any = None, core: EngineCore | None = None):
        self.config = config or EngineConfig()
        self.model_path: Path | None = None
        if core is None:
            if hf_model is None:
                loaded = load_model(self.config.model, _DTYPES[self.config.dtype], self.config.device)
                hf_model, tokenizer, self.model_path = loaded.hf_model, loaded.tokenizer, loaded.path
            core = build_core(self.config, hf_model, tokenizer)
        self.core = core
        self.tokenizer = tokenizer
        self._streams: dict[str, _Stream] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-step")
        self._loop_task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._pending: list[tuple[Any, tuple, asyncio.Future]] = []  # streamed-prompt ops, applied between steps

    # ---- public API --------------------------------------------------------------
    async def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        """Stream the request's outputs; the last has ``finished=True`` and ``metrics``.

        Raises ``RequestRejected`` (a ``ValueError``) for a request that can never
        run, and ``EngineError`` if the engine fails while serving it. Closing
        or cancelling the iterator aborts the request and frees its blocks.
        """
        if self._closed:
            raise EngineError("the engine is closed")
        self._ensure_loop()
        request = self.render(request)
        rid = request.request_id
        if rid in self._streams:
            raise RequestRejected(f"request_id {rid!r} is already in flight; use a unique id")
        sp = request.sampling
        stops = sp.stop if sp.forced_output_ids is None else []  # a forced output is replayed whole
        stream = self._streams[rid] = _Stream(Detokenizer(self.tokenizer, stops))
        try:
            self.core.add_request(request)
        except BaseException:
            self._streams.pop(rid, None)
            raise
        self._wake.set()
        finished = False
        try:
            while not finished:
                out = await stream.queue.get()
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                if out.finish_reason == "error":
                    raise EngineError(out.error or "engine error")
                yield out
        finally:
            self._streams.pop(rid, None)
            if not finished:
                self.core.abort(rid)

    def open(self, request: Request) -> PromptStream:
        """Open a streamed prompt (Stream2LLM): chunks are prefilled as they arrive, nothing is
        sampled until ``seal()``; then iterate it like ``generate``. See ``stream_api.py``.

        Example::

            stream = engine.open(Request(messages=[{"role": "user", "content": ""}]))
            await stream.append("retrieved text ...")
            stream.seal()
            async for out in stream: ...
        """
        if self._closed:
            raise EngineError("the engine is closed")
        self._ensure_loop()
        rid = request.request_id
        if rid in self._streams:
            raise RequestRejected(f"request_id {rid!r} is already in flight; use a unique id")
        head = tail = text = None
        if request.messages is not None:
            head, tail, text = PromptStream.split_template(self, request.messages)
            ids = self.tokenizer.encode(head + text, add_special_tokens=False)
            request = request.model_copy(update={"prompt_token_ids": ids, "messages": None})
        sp = request.sampling
        out = self._streams[rid] = _Stream(Detokenizer(self.tokenizer, sp.stop if sp.forced_output_ids is None else []))
        try:  # checked now; queued to the loop so opening never waits on a running step
            check_request(request, self.core.vocab_size, self.core.max_model_len, self.core.pool)
        except BaseException:
            self._streams.pop(rid, None)
            raise
        self._submit(self.core.open_request, request).add_done_callback(
            lambda f: f.cancelled() or f.exception() is None or out.queue.put_nowait(f.exception()))
        stream = PromptStream(self, request, out.queue)
        if text is not None:
            stream.text, stream._head, stream._tail = text, head, tail
        self._wake.set()
        return stream

    def render(self, request: Request) -> Request:
        """``request`` with its messages rendered into prompt token ids by the chat template."""
        if request.prompt_token_ids is not None:
            return request
        if self.tokenizer is None:
            raise RequestRejected("messages need a tokenizer; this engine has none, pass prompt_token_ids")
        ids, spans = chat_prompt(self.tokenizer, request.messages)
        return request.model_copy(update={"prompt_token_ids": ids, "messages": None,
                                          "segment_spans": request.segment_spans or spans})

    async def abort(self, request_id: str) -> None:
        """Abort a request; its stream ends with ``finish_reason="abort"``."""
        out = self.core.abort(request_id)
        if out is not None:
            self._deliver([out])

    def tool_hint(self, program_id: str, tool_keys: list[str]) -> None:
        """The program's last turn ended in calls to these tools (keys from ``tool_key.tool_key``)."""
        if self.core.tool_hint(program_id, tool_keys) and self._wake is not None:
            self._wake.set()  # the TTL policy pinned its KV: the loop starts watching expiry

    def end_program(self, program_id: str) -> None:
        """The program has ended: release its KV pin and forget it."""
        self.core.end_program(program_id)

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    def add_listener(self, listener: Listener) -> None:
        self.core.add_listener(listener)

    async def close(self) -> None:
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except (asyncio.CancelledError, Exception):
                pass
        self._executor.shutdown(wait=True)

    # ---- the step loop -----------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            skip = out.finish_reason == "stop"  # the eos / stop token is not part of the text
            out.text, hit_stop = stream.detok.update(out.token_ids, final=out.finished, skip_last=skip)
            if hit_stop:  # a stop string ends the request here
                if not out.finished:
                    final = self.core.abort(out.request_id, reason="stop")
                    out.metrics = final.metrics if final is not None else None
                out.finished, out.finish_reason = True, "stop"
            stream.queue.put_nowait(out)

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future:
        """Run ``fn(*args)`` (a core call) on the loop between two steps; a future of its result.

        A streamed prompt's chunks go through here: calling the core from another thread would
        wait on its lock, which the step thread takes again at once (no fairness)."""
        self._ensure_loop()
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((fn, args, fut))
        self._wake.set()
        return fut

    def _apply_pending(self) -> None:
        ops, self._pending = self._pending, []
        for fn, args, fut in ops:
            try:
                result = fn(*args)
            except Exception as e:
                if not fut.cancelled():
                    fut.set_exception(e)
            else:
                if not fut.cancelled():
                    fut.set_result(result)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._pending:
                self._apply_pending()
            if not self.core.has_work():
                self._wake.clear()
                # Pins expire even when idle, and so do open prompts whose caller went away.
                timeout = 0.25 if self.core.programs.pinned() else 1.0 if self.core.has_open_prompts() else None
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    self.core.expire_pins()
                    self._deliver(self.core.expire_open_prompts())
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, self.core.step)
            except Exception as e:  # never leave a caller waiting forever
                for stream in self._streams.values():
                    stream.queue.put_nowait(EngineError(f"engine loop failed: {e}"))
                raise
            self._deliver(outputs)
