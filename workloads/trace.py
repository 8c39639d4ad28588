"""The trace schema: programs, their turns, and the tool each turn called.

A turn says what the prompt gains (real messages where the source has them,
else a token count), what the model answered (real text where known, else a
token count), and the tool called after it, with its duration. Saved as JSON
lines, one program per line.

Limits (a file past them is a ``TraceError`` naming the file, line and field, never
a crash later in a replay): a turn appends and outputs at most ``MAX_TURN_TOKENS``
(10**7) tokens each, a program's whole context is at most ``MAX_PROGRAM_TOKENS``
(10**8), token ids are in ``[0, 2**31)``, times are finite, and JSON nests at most
``MAX_JSON_DEPTH`` (100) levels (``NaN``/``Infinity`` are not JSON here).

Streamed turns (Stream2LLM): a turn may carry ``append_chunks``, the arrivals of its
appended tokens over time (``ChunkArrival``: ``time_s`` after the turn's start, ``op``
``append`` or ``replace``, ``tokens`` the streamed part's length after it, ``keep_tokens``
for a replace). Absent, the turn's tokens arrive at once, as in every trace before them.
``workloads/chunks.py`` derives their token ids and synthesizes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TOOL_CLASSES = ("shell", "edit", "view", "search", "test", "other")
MAX_TURN_TOKENS = 10**7  # per turn, appended and output each: far past any model's context
MAX_PROGRAM_TOKENS = 10**8  # a program's whole context (every turn's appended + output tokens)
MAX_TOKEN_ID = 2**31 - 1
MAX_JSON_DEPTH = 100  # nesting levels of a JSON value (trajectories use about 10)
MAX_TURN_CHUNKS = 10_000  # chunk arrivals per streamed turn (Stream2LLM's shapes use 8-32)


class TraceError(ValueError):
    """A trace or trajectory file is malformed; the message names the file, line and field."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:20]} is out of range")
    return v


def parse_json(text: str) -> Any:
    """``json.loads`` that refuses ``NaN``/``Infinity``, numbers out of float range and nesting past
    ``MAX_JSON_DEPTH``; ValueError (with a short reason) for any problem."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_depth(value)
    return value


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """ValueError when lists/objects in ``value`` nest deeper than ``limit`` (iterative: any depth)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            if d > limit:
                raise ValueError(f"nested deeper than {limit} levels")
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))


def read_json(path: Path) -> Any:
    """A JSON file's content; TraceError naming the file when it is not JSON (see ``parse_json``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TraceError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return parse_json(text)
    except ValueError as e:  # also ints of more than 4300 digits
        raise TraceError(f"{path}: not JSON ({e})") from None


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line of a JSON-lines file;
    TraceError naming the file and line at the first one that is not JSON (see ``parse_json``)."""
    with Path(path).open(encoding="utf-8") as f:
        lineno = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError:
                raise TraceError(f"{path}:{lineno + 1}: not UTF-8 text") from None
            if not line:
                return
            lineno += 1
            if line.strip():
                try:
                    value = parse_json(line)
                except ValueError as e:
                    raise TraceError(f"{path}:{lineno}: not JSON ({e})") from None
                yield lineno, value


class ToolCallRecord(BaseModel):
    """The tool a turn called, and how long it ran."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="tool name; for shell tools the command's program, e.g. 'pytest'")
    tool_class: str = Field(default="other", description=f"one of {TOOL_CLASSES}")
    arguments: Any = None
    duration_s: float = Field(ge=0, allow_inf_nan=False)
    duration_drawn: bool = Field(default=False, description="drawn from a distribution, not observed")

    @model_validator(mode="after")
    def _known_class(self) -> "ToolCallRecord":
        if self.tool_class not in TOOL_CLASSES:
            raise ValueError(f"tool_class {self.tool_class!r} is not one of {TOOL_CLASSES}")
        return self


TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]


class ChunkArrival(BaseModel):
    """One arrival of a streamed turn's appended tokens.

    ``time_s`` is seconds after the turn's start (the previous tool's return); ``tokens`` is the
    streamed part's length after this arrival. ``append`` extends the streamed part; ``replace``
    revises it (a re-rank): its first ``keep_tokens`` tokens are the previous streamed part's,
    the rest is new. E.g. ``{"time_s": 0.4, "op": "replace", "tokens": 120, "keep_tokens": 30}``.
    """

    model_config = ConfigDict(extra="forbid")

    time_s: float = Field(ge=0, allow_inf_nan=False)
    op: Literal["append", "replace"]
    tokens: int = Field(ge=1, le=MAX_TURN_TOKENS)
    keep_tokens: int | None = Field(default=None, ge=0, le=MAX_TURN_TOKENS,
                                    description="replace only: the common prefix with the previous streamed part")

    @model_validator(mode="after")
    def _keep_fits(self) -> "ChunkArrival":
        if self.op == "append" and self.keep_tokens is not None:
            raise ValueError("keep_tokens: only a replace keeps a prefix (an append keeps everything)")
        if self.op == "replace":
            if self.keep_tokens is None:
                raise ValueError("keep_tokens: a replace must say how many tokens it keeps")
            if self.keep_tokens > self.tokens:
                raise ValueError(f"keep_tokens: {self.keep_tokens} is more than the {self.tokens} tokens "
                                 "the streamed part has after the replace")
        return self


def check_chunks(chunks: list[ChunkArrival], append_tokens: int) -> None:
    """ValueError naming the arrival and field when ``chunks`` can't describe a turn appending
    ``append_tokens`` tokens: times must not decrease, an append must add tokens, a replace keep
    at most what was there, the last arrival leave ``append_tokens``, and the tokens the
    arrivals carry (an append its new ones, a replace its revised part) stay within
    ``MAX_PROGRAM_TOKENS``."""
    prev_t, prev_n, carried = 0.0, 0, 0
    for i, c in enumerate(chunks):
        where = f"append_chunks.{i}"
        if c.time_s < prev_t:
            raise ValueError(f"{where}.time_s: {c.time_s} is before the previous arrival's {prev_t} "
                             "(arrival times must not decrease)")
        if c.op == "append" and c.tokens <= prev_n:
            raise ValueError(f"{where}.tokens: an append must grow the streamed part past {prev_n} tokens, "
                             f"got {c.tokens}")
        if c.op == "replace" and c.keep_tokens > prev_n:
            raise ValueError(f"{where}.keep_tokens: {c.keep_tokens} is more than the {prev_n} tokens "
                             "streamed before it")
        carried += c.tokens - (prev_n if c.op == "append" else c.keep_tokens)
        prev_t, prev_n = c.time_s, c.tokens
    if prev_n != append_tokens:
        raise ValueError(f"append_chunks.{len(chunks) - 1}.tokens: the last arrival leaves {prev_n} tokens, "
                         f"but the turn appends append_tokens={append_tokens}")
    if carried > MAX_PROGRAM_TOKENS:
        raise ValueError(f"append_chunks: the arrivals carry {carried} tokens, over {MAX_PROGRAM_TOKENS}")


class Turn(BaseModel):
    """One LLM call of a program, and the tool call that followed it (None on the last turn).

    ``append_tokens`` and ``output_tokens`` are always set (each at most ``MAX_TURN_TOKENS``);
    ``append_messages`` and ``output_text`` hold the real text when the source has it, and
    ``append_token_ids`` / ``output_token_ids`` the tokens once tokenized. ``append_chunks``
    (None: all at once) says when the appended tokens arrive; the last arrival's content is
    the appended tokens (see ``ChunkArrival``, ``check_chunks``).
    """

    model_config = ConfigDict(extra="forbid")

    append_messages: list[dict[str, Any]] | None = None
    append_tokens: int = Field(ge=0, le=MAX_TURN_TOKENS)
    append_token_ids: list[TokenId] | None = Field(default=None, max_length=MAX_TURN_TOKENS)
    output_text: str | None = None
    output_tokens: int = Field(ge=1, le=MAX_TURN_TOKENS)
    output_token_ids: list[TokenId] | None = Field(default=None, max_length=MAX_TURN_TOKENS)
    tool: ToolCallRecord | None = None
    append_chunks: list[ChunkArrival] | None = Field(default=None, min_length=1, max_length=MAX_TURN_CHUNKS)

    @model_validator(mode="after")
    def _ids_match_counts(self) -> "Turn":
        if self.append_token_ids is not None and len(self.append_token_ids) != self.append_tokens:
            raise ValueError("append_token_ids must have append_tokens entries")
        if self.output_token_ids is not None and len(self.output_token_ids) != self.output_tokens:
            raise ValueError("output_token_ids must have output_tokens entries")
        if self.append_chunks is not None:
            check_chunks(self.append_chunks, self.append_tokens)
        return self


class Program(BaseModel):
    """One agent run: when it arrives and its turns in order."""

    model_config = ConfigDict(extra="forbid")

    program_id: str = Field(min_length=1)
    arrival_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    source: str = "unknown"
    turns: list[Turn] = Field(min_length=1)

    @model_validator(mode="after")
    def _bounded_context(self) -> "Program":
        if self.total_tokens > MAX_PROGRAM_TOKENS:
            raise ValueError(f"the program's context reaches {self.total_tokens} tokens, over the "
                             f"{MAX_PROGRAM_TOKENS} a program may have")
        return self

    @property
    def total_tokens(self) -> int:
        """Context length at the end: everything appended plus everything generated."""
        return sum(t.append_tokens + t.output_tokens for t in self.turns)


class Trace(BaseModel):
    """A list of programs plus how it was made (source files, seed, scales)."""

    programs: list[Program]
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def streamed_turns(self) -> int:
        """Turns whose appended tokens arrive in chunks (``append_chunks``)."""
        return sum(t.append_chunks is not None for p in self.programs for t in p.turns)

    def save(self, path: str | Path) -> Path:
        """Write JSON lines: a ``{"trace_meta": ...}`` header, then one program per line."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            f.write(json.dumps({"trace_meta": self.meta}) + "\n")
            for p in self.programs:
                f.write(p.model_dump_json(exclude_none=True) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Trace":
        """Read a trace written by ``save``; errors name the file, line and field."""
        path = Path(path)
        programs, meta = [], {}
        for lineno, obj in iter_json_lines(path):
            if not isinstance(obj, dict):
                raise TraceError(f"{path}:{lineno}: expected a JSON object (a program), got {type(obj).__name__}")
            if "trace_meta" in obj:
                meta = obj["trace_meta"]
                if not isinstance(meta, dict):
                    raise TraceError(f"{path}:{lineno}: trace_meta: expected an object, got {type(meta).__name__}")
                continue
            try:
                programs.append(Program.model_validate(obj))
            except ValidationError as e:
                raise TraceError(f"{path}:{lineno}: {describe_validation_error(e)}") from None
        if not programs:
            raise TraceError(f"{path}: no programs")
        return cls(programs=programs, meta=meta)


def describe_validation_error(e: ValidationError) -> str:
    """'field.path: message' for each problem, e.g. 'turns.2.tool.duration_s: Input should be >= 0'."""
    return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors())
