"""``RemoteStream``: a streamed prompt (``Engine.open``) held by an engine replica, driven from here.

``ReplicaClient.open`` returns one. It has ``PromptStream``'s API; each call is one call of the
replica actor (``EngineReplicaImpl.stream_*``), which keeps the real ``PromptStream``. Calls apply
in call order: each waits for the previous one's answer before it is sent (``seal()`` too, which
returns at once but takes its place in that order).

Example::

    stream = await client.open(Request(messages=[{"role": "user", "content": "Context: "}], program_id="p1"))
    await stream.append("a retrieved passage ...")
    await stream.replace("a better passage ...")        # the whole streamed content so far
    stream.seal()
    async for out in stream:
        print(out.text, end="")

Closing it, or leaving its iteration early, aborts the request in the replica's engine (its KV
blocks are freed); a replica that dies under it raises ``ReplicaDied``.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

from ray.exceptions import RayActorError, RayTaskError

from tether.engine import Request, RequestOutput, RequestRejected

Died = Callable[[Exception], Awaitable[Exception]]  # the replica died: mark it so, and the error to raise


def _cause(e: RayTaskError) -> BaseException:
    """The exception the replica raised (``RequestRejected`` stays ``RequestRejected``, with its own message)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, Exception) else e


class RemoteStream:
    """One open prompt on one replica; made by ``ReplicaClient.open`` (``RemoteStream.start``)."""

    def __init__(self, replica: Any, request_id: str, died: Died, release: Callable[[], Any] | None = None):
        self.request_id = request_id
        self.invalidated_tokens = 0  # replace's counts here; the final output's metrics have the total
        self._replica = replica
        self._died = died
        self._release = release  # the router's count of this request, for an anonymous one
        self._tail: asyncio.Future | None = None  # the last call made: the next one waits for it
        self._sealing: asyncio.Future | None = None
        self._sealed = self._finished = False

    @classmethod
    async def start(cls, replica: Any, request: Request, trace: tuple, died: Died,
                    release: Callable[[], Any] | None = None) -> "RemoteStream":
        """Open ``request`` on ``replica`` (``trace``: the caller's traceparent, or nothing)."""
        stream = cls(replica, request.request_id, died, release)
        try:
            await stream._await(replica.stream_open.remote(request, *trace))
        except BaseException:
            stream._finished = True  # nothing opened there: nothing to close
            stream._end()
            raise
        return stream

    # ---- the prompt --------------------------------------------------------------------------
    async def append(self, chunk: str | list[int]) -> None:
        """Add a chunk: text (opened with messages) or token ids (opened with ids)."""
        self._check_open()
        await self._call("stream_append", chunk)

    async def replace(self, new: str | list[int]) -> int:
        """Make the streamed part ``new``; returns the computed tokens this invalidated."""
        self._check_open()
        lost = await self._call("stream_replace", new)
        self.invalidated_tokens += lost
        return lost

    def seal(self) -> asyncio.Future:
        """The prompt is complete. Awaiting the result is optional: it waits for the replica to apply it."""
        self._check_open()
        self._sealed = True
        self._sealing = self._call("stream_seal")
        return self._sealing

    async def progress(self) -> dict[str, int | None]:
        """``prompt_tokens`` and ``computed_tokens`` so far (None once the request has ended)."""
        if self._finished:
            return {"prompt_tokens": None, "computed_tokens": None}
        return await self._call("stream_progress")

    # ---- outputs -----------------------------------------------------------------------------
    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        """The outputs after ``seal``; the last has ``finished=True`` and ``metrics``."""
        try:
            await self._settled()  # the open and every chunk reach the replica before this
            if self._sealing is not None:
                await self._sealing  # a seal that failed ends the iteration with its error
            if self._finished:
                return
            gen = self._replica.stream_outputs.options(num_returns="streaming").remote(self.request_id)
            try:
                async for ref in gen:
                    out = await ref
                    if out.finished:
                        self._done(out)
                    yield out
            except RayActorError as e:
                self._finished = True  # nothing left to abort: the engine that ran it is gone
                self._end()
                raise await self._died(e) from None
            except RayTaskError as e:
                raise _cause(e) from None
        finally:
            if not self._finished:  # left early, cancelled or failed: free the engine's blocks
                await self.aclose()

    async def aclose(self) -> None:
        """Abort the request (if still running) and free its blocks."""
        if self._finished:
            return
        self._finished = True
        try:
            await self._settled()  # after the calls already made (the open, a chunk)
            await self._replica.stream_close.remote(self.request_id)
        except RayActorError as e:
            await self._died(e)  # the router learns it; its blocks went with it, nothing to raise
        finally:
            if self._sealing is not None and self._sealing.done() and not self._sealing.cancelled():
                self._sealing.exception()  # nobody reads a failed seal now: no "never retrieved" warning
            self._end()

    async def __aenter__(self) -> "RemoteStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped without closing (an abandoned stream): free the replica's blocks anyway.
        if not self._finished:
            self._finished = True
            try:
                self._replica.stream_close.remote(self.request_id)
                self._end()
            except Exception:  # interpreter or Ray shutting down: nothing left to free
                pass

    # ---- plumbing ----------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> asyncio.Future:
        """``replica.<method>(request_id, *args)``, sent once the previous call has been answered."""
        prev = self._tail

        async def run() -> Any:
            if prev is not None and not prev.done():
                await asyncio.wait([prev])  # its outcome is its caller's to read
            return await self._await(getattr(self._replica, method).remote(self.request_id, *args))
        self._tail = asyncio.ensure_future(run())
        return self._tail

    async def _settled(self) -> None:
        if self._tail is not None and not self._tail.done():
            await asyncio.wait([self._tail])

    async def _await(self, ref: Any) -> Any:
        try:
            return await ref
        except RayActorError as e:
            if not self._finished:
                self._finished = True
                self._end()
            raise await self._died(e) from None
        except RayTaskError as e:
            raise _cause(e) from None

    def _done(self, out: RequestOutput) -> None:
        self._finished = True
        if out.metrics is not None:
            self.invalidated_tokens = out.metrics.invalidated_tokens
        self._end()

    def _end(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def _check_open(self) -> None:
        if self._sealed or self._finished:
            raise RequestRejected(f"stream {self.request_id!r} is sealed or finished; its prompt can no longer change")
