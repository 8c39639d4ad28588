"""The trace schema: programs, their turns, and the tool each turn called.

A turn says what the prompt gains (real messages where the source has them,
else a token count), what the model answered (real text where known, else a
token count), and the tool called after it, with its duration. Saved as JSON
lines, one program per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TOOL_CLASSES = ("shell", "edit", "view", "search", "test", "other")


class TraceError(ValueError):
    """A trace or trajectory file is malformed; the message names the file, line and field."""


def read_json(path: Path) -> Any:
    """A JSON file's content; TraceError naming the file when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None


def iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line of a JSON-lines file;
    TraceError naming the file and line at the first one that is not JSON."""
    with Path(path).open() as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise TraceError(f"{path}:{lineno}: not JSON ({e.msg})") from None


class ToolCallRecord(BaseModel):
    """The tool a turn called, and how long it ran."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="tool name; for shell tools the command's program, e.g. 'pytest'")
    tool_class: str = Field(default="other", description=f"one of {TOOL_CLASSES}")
    arguments: Any = None
    duration_s: float = Field(ge=0)
    duration_drawn: bool = Field(default=False, description="drawn from a distribution, not observed")

    @model_validator(mode="after")
    def _known_class(self) -> "ToolCallRecord":
        if self.tool_class not in TOOL_CLASSES:
            raise ValueError(f"tool_class {self.tool_class!r} is not one of {TOOL_CLASSES}")
        return self


class Turn(BaseModel):
    """One LLM call of a program, and the tool call that followed it (None on the last turn).

    ``append_tokens`` and ``output_tokens`` are always set; ``append_messages``
    and ``output_text`` hold the real text when the source has it, and
    ``append_token_ids`` / ``output_token_ids`` the tokens once tokenized.
    """

    model_config = ConfigDict(extra="forbid")

    append_messages: list[dict[str, Any]] | None = None
    append_tokens: int = Field(ge=0)
    append_token_ids: list[int] | None = None
    output_text: str | None = None
    output_tokens: int = Field(ge=1)
    output_token_ids: list[int] | None = None
    tool: ToolCallRecord | None = None

    @model_validator(mode="after")
    def _ids_match_counts(self) -> "Turn":
        if self.append_token_ids is not None and len(self.append_token_ids) != self.append_tokens:
            raise ValueError("append_token_ids must have append_tokens entries")
        if self.output_token_ids is not None and len(self.output_token_ids) != self.output_tokens:
            raise ValueError("output_token_ids must have output_tokens entries")
        return self


class Program(BaseModel):
    """One agent run: when it arrives and its turns in order."""

    model_config = ConfigDict(extra="forbid")

    program_id: str = Field(min_length=1)
    arrival_s: float = Field(default=0.0, ge=0)
    source: str = "unknown"
    turns: list[Turn] = Field(min_length=1)

    @property
    def total_tokens(self) -> int:
        """Context length at the end: everything appended plus everything generated."""
        return sum(t.append_tokens + t.output_tokens for t in self.turns)


class Trace(BaseModel):
    """A list of programs plus how it was made (source files, seed, scales)."""

    programs: list[Program]
    meta: dict[str, Any] = Field(default_factory=dict)

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
            if "trace_meta" in obj:
                meta = obj["trace_meta"]
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
