"""``Engine.open``'s stream: a prompt sent in chunks, then the usual streamed outputs.

Text chunks are never tokenized one by one (a word cut at a chunk boundary
tokenizes differently than whole): the stream keeps the text so far,
re-tokenizes it, and hands the core the new ids as a ``replace``; the core
keeps the longest common prefix, so an append costs only the changed tail.
The final ids therefore equal tokenizing the whole final text.

Example::

    stream = engine.open(Request(messages=[{"role": "user", "content": "Context:\\n"}],
                                 sampling=SamplingParams(max_tokens=32)))
    await stream.append("first retrieved passage ...")
    await stream.replace("Context:\\nbetter passage ...")   # the whole streamed content so far
    stream.seal()                                          # or ``await stream.seal()``: until applied
    async for out in stream:
        print(out.text, end="")

``tether.runtime.remote_stream.RemoteStream`` is the same API over an engine replica (Ray).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator

from tether.engine.request import Request, RequestOutput, RequestRejected

if TYPE_CHECKING:
    from tether.engine.engine import Engine

_SLOT = "\x00tether-streamed-content\x00"
_CLOSED = object()  # put in the queue by ``aclose``: a reader in another task stops waiting


class PromptStream:
    """One open prompt. Opened with ``messages``, its last message's content is the streamed
    text (chunks are ``str``); opened with ``prompt_token_ids``, chunks are token ids."""

    def __init__(self, engine: "Engine", request: Request, queue: asyncio.Queue):
        self.engine = engine
        self.request_id = request.request_id
        self._queue = queue
        self._sealed = False
        self._finished = False
        self._lock = asyncio.Lock()  # one prompt change at a time, in call order
        self.text: str | None = None  # the streamed content so far (text mode)
        self._head = self._tail = ""
        self.invalidated_tokens = 0

    @staticmethod
    def split_template(engine: "Engine", messages: list[dict[str, Any]]) -> tuple[str, str, str]:
        """The rendered prompt before and after the last message's content, and that content."""
        from tether.engine.engine import chat_prompt_text

        content = messages[-1].get("content")
        if not isinstance(content, str):
            raise RequestRejected("Engine.open: the last message's content must be the streamed text so far "
                                  "(a string, may be empty)")
        rendered = chat_prompt_text(engine.tokenizer, messages[:-1] + [{**messages[-1], "content": _SLOT}])
        if rendered.count(_SLOT) != 1:
            raise RequestRejected("Engine.open: this chat template does not place the message content verbatim; "
                                  "stream token ids instead")
        head, tail = rendered.split(_SLOT)
        return head, tail, content

    def _ids(self, text: str, sealed: bool) -> list[int]:
        full = self._head + text + (self._tail if sealed else "")
        return self.engine.tokenizer.encode(full, add_special_tokens=False)

    async def append(self, chunk: str | list[int]) -> None:
        """Add a chunk: text (a stream opened with messages) or token ids (opened with ids)."""
        async with self._lock:
            self._check_open()
            if self.text is not None:
                if not isinstance(chunk, str):
                    raise RequestRejected("this stream was opened with messages: append text, not token ids")
                self.text += chunk
                await self._set(self._ids(self.text, False))
            else:
                if isinstance(chunk, str):
                    raise RequestRejected("this stream was opened with prompt_token_ids: append token ids")
                await self.engine._submit(self.engine.core.append_prompt, self.request_id, list(chunk))

    async def replace(self, new: str | list[int]) -> int:
        """Make the streamed part ``new`` (text mode: the whole content so far; id mode: the
        whole prompt). Returns the computed tokens this invalidated."""
        async with self._lock:
            self._check_open()
            if self.text is not None:
                if not isinstance(new, str):
                    raise RequestRejected("this stream was opened with messages: replace with text")
                self.text = new
                return await self._set(self._ids(new, False))
            if isinstance(new, str):
                raise RequestRejected("this stream was opened with prompt_token_ids: replace with token ids")
            return await self._set(list(new))

    def seal(self) -> asyncio.Future:
        """The prompt is complete: the first token is sampled once its last token is computed.

        Awaiting the result is optional: it waits until the engine has applied the seal (and raises
        its error, if any). Either way a failure also ends the iteration with that error."""
        self._check_open()
        self._sealed = True
        final = self._ids(self.text, True) if self.text is not None else None
        fut = self.engine._submit(self._seal_now, final)
        # A failure (the tail made the prompt too long, say) ends the iteration with its error.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception() is None or self._queue.put_nowait(f.exception()))
        return fut

    def _seal_now(self, final: list[int] | None) -> None:
        core = self.engine.core
        if final is not None:  # the template's tail (end of turn, assistant header) arrives now
            self.invalidated_tokens += core.replace_prompt(self.request_id, final)
        core.seal_prompt(self.request_id)

    async def progress(self) -> dict[str, int | None]:
        """``prompt_tokens`` so far and ``computed_tokens`` (prefilled); None once the request has ended.

        Example::

            await stream.progress()   # {"prompt_tokens": 412, "computed_tokens": 384}
        """
        seq = self.engine.core.seqs.get(self.request_id)
        return {"prompt_tokens": seq.num_prompt_tokens if seq else None,
                "computed_tokens": seq.num_computed_tokens if seq else None}

    async def _set(self, ids: list[int]) -> int:
        lost = await self.engine._submit(self.engine.core.replace_prompt, self.request_id, ids)
        self.invalidated_tokens += lost
        return lost

    def _check_open(self) -> None:
        if self._sealed or self._finished:
            raise RequestRejected(f"stream {self.request_id!r} is sealed or finished; its prompt can no longer change")

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        """The outputs after ``seal``; the last has ``finished=True`` and ``metrics``."""
        from tether.engine.engine import EngineError

        try:
            while not self._finished:
                out = await self._queue.get()
                if out is _CLOSED:
                    return
                if isinstance(out, BaseException):
                    raise out
                self._finished = out.finished
                if out.finish_reason == "error":
                    raise EngineError(out.error or "engine error")
                yield out
        finally:
            if not self._finished:
                await self.aclose()

    async def aclose(self) -> None:
        """Abort the request (if still running) and free its blocks. A reader iterating in another
        task gets the final ``finish_reason="abort"`` output (or its iteration just ends)."""
        self._finished = True
        self.engine._streams.pop(self.request_id, None)
        if self.engine._closed or self.engine._loop_task is None or self.engine._loop_task.done():
            out = self.engine.core.abort(self.request_id)
        else:  # after any queued change of this prompt (its open, say)
            out = await self.engine._submit(self.engine.core.abort, self.request_id)
        # The engine no longer routes this request's outputs here: without this a reader would wait forever.
        self._queue.put_nowait(out if out is not None else _CLOSED)

    async def __aenter__(self) -> "PromptStream":
        return self

    async def __aexit__(self, *exc) -> None:
        if not self._finished:
            await self.aclose()
