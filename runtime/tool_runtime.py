"""What the built-in tools run: shell commands, Python snippets, HTTP GETs.

Plain blocking functions with hard limits, so a tool can never hang its caller
or flood a prompt: every subprocess runs in its own process group and the whole
group is killed on timeout; output keeps its head and tail within a character
budget. Callers in async code run them in a thread.

Example::

    r = run_shell("ls -1 | head -3", cwd="/tmp", timeout_s=5)
    print(r.exit_code, r.output)
    print(r.to_text())   # what an LLM sees: output plus "[exit code 0]"
"""

from __future__ import annotations

import codecs
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

__all__ = ["ShellResult", "http_fetch", "run_python", "run_shell", "truncate_middle"]

DEFAULT_MAX_OUTPUT_CHARS = 10_000
# After killing a timed-out group, how long to keep reading what it already wrote.
_DRAIN_GRACE_S = 1.0
_POLL_S = 0.1


@dataclass(frozen=True)
class ShellResult:
    """The outcome of a subprocess.

    ``exit_code`` is ``None`` when the process was killed on timeout (then
    ``timed_out`` is true). ``output`` is stdout and stderr interleaved, truncated.
    """

    output: str
    exit_code: int | None
    timed_out: bool
    duration_s: float
    timeout_s: float

    def to_text(self) -> str:
        """The result as an LLM should read it: output, then a status line."""
        if self.timed_out:
            status = f"[timed out after {self.timeout_s:g}s]"
        else:
            status = f"[exit code {self.exit_code}]"
        return f"{self.output.rstrip()}\n{status}" if self.output.strip() else status


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep the first and last ``max_chars // 2`` characters, marking the cut.

    Both ends matter for tool output: the head has the command's context, the
    tail its errors and final state.
    """
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    return _join(text[:head], len(text) - max_chars, text[len(text) - tail :] if tail else "")


def _join(head: str, omitted: int, tail: str) -> str:
    return f"{head}\n... [truncated {omitted} chars] ...\n{tail}"


class _HeadTail:
    """Collects a stream in bounded memory: the first and last characters only.

    A command like ``yes`` writes gigabytes before its timeout; keeping all of
    it only to cut it later would exhaust memory.
    """

    def __init__(self, max_chars: int):
        self._head_max = max_chars // 2
        self._tail_max = max_chars - self._head_max
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self._total = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        self._total += len(text)
        room = self._head_max - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += len(text[:room])
            text = text[room:]
        if text and self._tail_max:
            self._tail = (self._tail + text)[-self._tail_max :]

    def text(self) -> str:
        self.feed(b"", final=True)
        head = "".join(self._head)
        omitted = self._total - len(head) - len(self._tail)
        if omitted <= 0:
            return head + self._tail
        return _join(head, omitted, self._tail)


def _run_process(
    argv: list[str],
    *,
    cwd: str | None,
    timeout_s: float,
    max_output_chars: int,
    env: dict[str, str] | None = None,
) -> ShellResult:
    start = time.monotonic()
    deadline = start + timeout_s
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,  # a command waiting for input gets EOF, not a hang
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: one killpg reaches every child
    )
    out = _HeadTail(max_output_chars)
    assert proc.stdout is not None
    with proc.stdout, selectors.DefaultSelector() as sel:
        fd = proc.stdout.fileno()
        sel.register(fd, selectors.EVENT_READ)
        # Read until EOF, i.e. until every process holding the pipe is gone, or
        # until the deadline; once the command itself has exited, background
        # children that hold the pipe get only a short grace.
        exited_at: float | None = None
        eof = False
        while not eof:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            limit = deadline if exited_at is None else min(deadline, exited_at + _DRAIN_GRACE_S)
            if now >= limit:
                break
            # Wake up now and then to notice the command exiting while a child holds the pipe.
            if sel.select(min(limit - now, _POLL_S)):
                data = os.read(fd, 65536)
                if data:
                    out.feed(data)
                else:
                    eof = True
        if eof:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # closed its stdout but kept running
                pass
        timed_out = proc.poll() is None
        if timed_out or not eof:
            # The timed-out command with all its children, or stragglers holding the pipe.
            _kill_group(proc.pid)
            grace_end = time.monotonic() + _DRAIN_GRACE_S
            while not eof and (left := grace_end - time.monotonic()) > 0 and sel.select(left):
                data = os.read(fd, 65536)  # keep what the group wrote before it died
                out.feed(data)
                eof = not data
            proc.wait()
    return ShellResult(
        output=out.text(),
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        timeout_s=timeout_s,
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def run_shell(
    command: str,
    cwd: str | None = None,
    timeout_s: float = 30.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> ShellResult:
    """Run ``command`` with ``bash -c``; kill it and all its children after ``timeout_s``.

    Background processes that keep the output pipe open are killed about a
    second after the command exits; redirect their output to keep them
    (``server > log 2>&1 &``).

    Example::

        run_shell("pytest -q", cwd=repo, timeout_s=120).to_text()
    """
    return _run_process(
        ["bash", "-c", command], cwd=cwd, timeout_s=timeout_s, max_output_chars=max_output_chars
    )


def run_python(
    code: str,
    timeout_s: float = 30.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    cwd: str | None = None,
) -> ShellResult:
    """Run ``code`` in a fresh interpreter (this one's ``sys.executable``).

    Example::

        run_python("print(sum(range(10)))").output   # "45\\n"
    """
    # -u: unbuffered, so a snippet killed on timeout still shows what it printed.
    return _run_process(
        [sys.executable, "-u", "-c", code],
        cwd=cwd,
        timeout_s=timeout_s,
        max_output_chars=max_output_chars,
    )


_TEXT_TYPES = ("text/", "json", "xml", "javascript", "yaml", "csv")


def http_fetch(
    url: str,
    timeout_s: float = 20.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    max_bytes: int = 2_000_000,
) -> str:
    """GET ``url``; return the status line and the body as text. Never raises.

    Reads at most ``max_bytes`` of the body; failures come back as ``"error: ..."``.

    Example::

        http_fetch("https://example.com")   # "HTTP 200 OK\\n\\n<!doctype html>..."
    """
    if not url.startswith(("http://", "https://")):
        return f"error: only http:// and https:// URLs can be fetched, got {url!r}"
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            with client.stream("GET", url) as response:
                body = bytearray()
                cut = False
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        del body[max_bytes:]
                        cut = True
                        break
                status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
                content_type = response.headers.get("content-type", "")
                encoding = response.encoding or "utf-8"
    except Exception as e:  # the caller wants text either way
        return f"error: {type(e).__name__}: {e}"
    if content_type and not any(t in content_type for t in _TEXT_TYPES):
        return f"{status}\n\n[{content_type} body, {len(body)} bytes, not shown]"
    try:
        text = bytes(body).decode(encoding, errors="replace")
    except LookupError:  # the server named an encoding Python does not know
        text = bytes(body).decode("utf-8", errors="replace")
    if cut:
        text += f"\n[body cut at {max_bytes} bytes]"
    return f"{status}\n\n{truncate_middle(text, max_output_chars)}"
