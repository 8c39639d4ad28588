"""The trace-format registry: every trajectory format is one ``TraceFormat`` registered by name.

A format says which file names it may read (``suffixes``), how to recognise one
(``detect(path, content)``) and how to load it (``load(path, content, seed)``).
``content`` is the file's ``FileContent``: parsed lazily and at most once, shared by
every format that looks at the file. Adding a format is one file plus a registration;
``detect_format`` and ``load_trajectories`` need no edit::

    def load_toy(path, content, seed):
        ...                                    # -> Trace

    TRACE_FORMATS.register("toy", TraceFormat(
        suffixes=(".toy",), description="a toy trace (.toy)",
        detect=lambda path, content: True, load=load_toy))

Formats are tried in registration order, the ``fallback`` ones (a catch-all such as
plain OpenAI messages) after all others; the first whose suffix fits and whose
``detect`` says yes reads the file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from tether.engine.registry import Registry

from ..trace import Trace, TraceError, iter_json_lines, read_json


class FileContent:
    """A trajectory file's content, parsed on first use and then kept.

    ``json``: the whole file as JSON (``.json``, ``.traj``); ``first_row``: the first
    JSON line (``.jsonl``). Each raises TraceError naming the file when it cannot parse.
    """

    def __init__(self, path: Path):
        self.path = path

    @cached_property
    def json(self) -> Any:
        try:
            return read_json(self.path)
        except UnicodeDecodeError:
            raise unknown_format(self.path, "not text") from None

    @cached_property
    def first_row(self) -> Any:
        try:
            row = next(iter_json_lines(self.path), None)
        except UnicodeDecodeError:
            raise unknown_format(self.path, "not text") from None
        if row is None:
            raise TraceError(f"{self.path}: empty file")
        return row[1]


Detect = Callable[[Path, FileContent], bool]
Load = Callable[[Path, FileContent, int], Trace]


@dataclass(frozen=True)
class TraceFormat:
    """One trajectory format.

    suffixes: lower-case endings of the file names it may read, e.g. ``(".traj", ".json")``;
        a folder load reads every file whose name ends with a registered suffix.
    detect: ``(path, content) -> bool``, whether the file is in this format.
    load: ``(path, content, seed) -> Trace``; ``seed`` seeds durations the file lacks.
    description: how error messages name it, e.g. ``"a SWE-agent .traj"``.
    fallback: tried after the other formats (a generic shape that specific ones refine).
    """

    suffixes: tuple[str, ...]
    detect: Detect
    load: Load
    description: str
    fallback: bool = False


TRACE_FORMATS = Registry[TraceFormat]("trace format")


def ordered() -> list[str]:
    """Registered format names in the order detection tries them: registration order, fallbacks last."""
    return sorted(TRACE_FORMATS, key=lambda n: TRACE_FORMATS.get(n).fallback)  # sorted() is stable


def suffixes() -> tuple[str, ...]:
    """Every file-name ending some registered format reads (sorted, unique)."""
    return tuple(sorted({s for name in TRACE_FORMATS for s in TRACE_FORMATS.get(name).suffixes}))


def detect(path: Path) -> tuple[str, FileContent]:
    """(format name, content) of a file; TraceError naming the file when no format takes it."""
    content = FileContent(path)
    name = path.name.lower()
    names = [n for n in ordered() if name.endswith(TRACE_FORMATS.get(n).suffixes)]
    if not names:
        raise unknown_format(path, f"extension {path.suffix or '(none)'!r}")
    for n in names:
        if TRACE_FORMATS.get(n).detect(path, content):
            return n, content
    raise unknown_format(path, f"content is none of: {', '.join(names)}")


def unknown_format(path: Path, why: str) -> TraceError:
    """The TraceError for a file no format takes, listing what the registered formats read."""
    d = [TRACE_FORMATS.get(n).description for n in ordered()] or ["a registered format (none are)"]
    expected = f"{', '.join(d[:-1])} or {d[-1]}" if len(d) > 1 else d[0]
    return TraceError(f"{path}: unknown trajectory format ({why}); expected {expected}")
