"""Tools: typed Python functions an LLM can call.

``@tool`` turns a function into a ``Tool``: its name, a description from the
docstring, a JSON schema of its parameters derived from the signature (with
per-parameter descriptions from the docstring's Google-style ``Args:``
section), argument validation, and ``invoke``, which never raises: invalid
arguments and exceptions come back as ``"error: ..."`` text for the model to
read and correct.

Example::

    @tool
    def add(a: int, b: int = 1) -> int:
        \"\"\"Add two integers.

        Args:
            a: the first addend.
            b: the second addend.
        \"\"\"
        return a + b

    add.openai_schema()          # {"type": "function", "function": {...}}
    await add.invoke({"a": 2})   # "3"
    await add.invoke({"a": "x"}) # "error: invalid arguments for tool 'add': a: ..."
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import re
import typing
from typing import Any, Callable, overload

import pydantic
import pydantic_core

__all__ = ["Tool", "ToolArgumentError", "ToolOutput", "tool"]


class ToolArgumentError(ValueError):
    """The arguments an LLM passed do not match the tool's parameters."""


class ToolOutput(str):
    """A tool's result text; ``is_error`` tells failures from ordinary output.

    A plain ``str`` everywhere else, so callers that only want text need not care.
    ``metadata`` is for the program, not the model (e.g. the built-in shell
    tool's ``{"isolation": "bwrap", "exit_code": 0, ...}``). The runtime's tool
    executor reads both by duck typing (it may not import this package). A tool
    function may return a ``ToolOutput`` itself; ``invoke`` passes it through.
    """

    is_error: bool = False
    metadata: dict[str, Any] | None = None

    def __new__(cls, text: str, is_error: bool = False, metadata: dict[str, Any] | None = None) -> ToolOutput:
        out = super().__new__(cls, text)
        out.is_error = is_error
        out.metadata = metadata
        return out

    def __reduce__(self):
        # str subclasses pickle their value but not instance attributes by default.
        return (ToolOutput, (str(self), self.is_error, self.metadata))


class Tool:
    """A callable an LLM can use: name, description, parameter schema, invoke.

    Build one with ``@tool``. ``timeout_s`` is the limit a tool executor applies
    when the caller gives none (``None``: no limit).

    Example::

        t = tool(my_function, name="search", timeout_s=10)
        text = await t.invoke({"query": "kv cache"})
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
    ):
        if not callable(fn):
            raise TypeError(f"a tool wraps a function, got {fn!r}")
        name = name or fn.__name__
        self._setup(fn, name, description, timeout_s, _type_hints(fn, name))

    def _setup(
        self,
        fn: Callable[..., Any],
        name: str,
        description: str | None,
        timeout_s: float | None,
        hints: dict[str, Any],
    ) -> None:
        doc = _parse_docstring(inspect.getdoc(fn) or "")
        self.fn = fn
        self.name = name
        self.description = description if description is not None else doc.summary
        self.timeout_s = timeout_s
        self._hints = hints
        self.args_model = _arguments_model(fn, name, hints, doc.params)
        self.parameters = _clean_schema(self.args_model.model_json_schema())
        self._is_async = inspect.iscoroutinefunction(fn)

    # -- schema -------------------------------------------------------------

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI's ``tools=[...]`` format (a fresh copy each call)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
            },
        }

    # -- calling ------------------------------------------------------------

    def validate(self, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
        """Check and coerce ``arguments``; return the keyword arguments to call with.

        ``arguments`` may also be the JSON string an LLM emits. Raises
        ``ToolArgumentError`` with one ``field: problem`` item per error.
        """
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                raise ToolArgumentError(
                    f"invalid arguments for tool '{self.name}': not valid JSON ({e})"
                ) from None
        if not isinstance(arguments, dict):
            raise ToolArgumentError(
                f"invalid arguments for tool '{self.name}': expected a JSON object, "
                f"got {type(arguments).__name__}"
            )
        try:
            parsed = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as e:
            raise ToolArgumentError(
                f"invalid arguments for tool '{self.name}': {_format_errors(e)}"
            ) from None
        # Attributes, not model_dump(): parameters typed as pydantic models keep
        # their model instances.
        return {field: getattr(parsed, field) for field in type(parsed).model_fields}

    async def invoke(self, arguments: dict[str, Any] | str | None) -> ToolOutput:
        """Validate, call, and render the result as text. Never raises ``Exception``.

        Sync functions run in a worker thread so they do not block the event loop.
        Time limits are the caller's (see ``tether.runtime.tool_executor``).
        """
        try:
            kwargs = self.validate(arguments)
        except ToolArgumentError as e:
            return ToolOutput(f"error: {e}", is_error=True)
        try:
            if self._is_async:
                result = await self.fn(**kwargs)
            else:
                result = await asyncio.to_thread(self.fn, **kwargs)
                if inspect.isawaitable(result):  # a sync wrapper returning a coroutine
                    result = await result
        except Exception as e:  # the model should see the failure, not the program
            return ToolOutput(f"error: {type(e).__name__}: {e}", is_error=True)
        if isinstance(result, ToolOutput):  # already rendered, with its flag and metadata
            return result
        try:
            return ToolOutput(_to_text(result))
        except Exception as e:
            return ToolOutput(
                f"error: tool '{self.name}' returned an unrenderable {type(result).__name__}: {e}",
                is_error=True,
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly (no validation, no rendering)."""
        return self.fn(*args, **kwargs)

    # -- plumbing -----------------------------------------------------------

    def __reduce__(self):
        # The generated pydantic model is a dynamic class: rebuild it on the
        # other side. Ship the resolved type hints rather than re-resolving
        # them there, since string annotations may name types that a function
        # pickled by value does not carry along. Attributes set on the tool
        # after it was made (e.g. a built-in tool's ``sandbox``) travel as state.
        extra = {k: v for k, v in self.__dict__.items() if k not in _SETUP_ATTRIBUTES}
        return (
            _rebuild_tool,
            (self.fn, self.name, self.description, self.timeout_s, self._hints),
            extra or None,
        )

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, timeout_s={self.timeout_s!r})"


_SETUP_ATTRIBUTES = frozenset(
    {"fn", "name", "description", "timeout_s", "_hints", "args_model", "parameters", "_is_async"}
)


def _rebuild_tool(fn, name, description, timeout_s, hints) -> Tool:
    t = Tool.__new__(Tool)
    t._setup(fn, name, description, timeout_s, hints)
    return t


@overload
def tool(
    fn: Callable[..., Any], /, *, name: str | None = None, description: str | None = None,
    timeout_s: float | None = None,
) -> Tool: ...
@overload
def tool(
    fn: None = None, /, *, name: str | None = None, description: str | None = None,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn=None, /, *, name=None, description=None, timeout_s=None):
    """Make a ``Tool`` from a typed function (sync or async).

    Usable bare (``@tool``), with options (``@tool(name="grep", timeout_s=5)``),
    or as a call (``tool(fn, name=...)``).
    """
    if fn is None:
        return lambda f: Tool(f, name=name, description=description, timeout_s=timeout_s)
    return Tool(fn, name=name, description=description, timeout_s=timeout_s)


# -- signature -> pydantic model ----------------------------------------------


def _type_hints(fn: Callable[..., Any], tool_name: str) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:
        raise TypeError(f"cannot resolve the type hints of tool '{tool_name}': {e}") from e
    hints.pop("return", None)  # not part of the schema, and may not pickle
    return hints


def _arguments_model(
    fn: Callable[..., Any], tool_name: str, hints: dict[str, Any], param_docs: dict[str, str]
) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(
                f"tool '{tool_name}': *{p.name} parameters cannot be described to an LLM"
            )
        annotation = hints.get(p.name, Any)
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (annotation, pydantic.Field(default, description=param_docs.get(p.name)))
    model_name = re.sub(r"\W", "_", tool_name) + "_arguments"
    # extra="forbid": a misspelled argument should be reported, not silently dropped.
    return pydantic.create_model(
        model_name, __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the auto-generated ``title`` keys; they only cost prompt tokens."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("title", None)
            for key, value in node.items():
                if key in ("properties", "$defs") and isinstance(value, dict):
                    # Keys here are names (a parameter may be called "title").
                    for sub in value.values():
                        walk(sub)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


def _format_errors(e: pydantic.ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    # Handles dataclasses, dicts of models, datetimes...; anything else via str().
    return pydantic_core.to_json(value, fallback=str).decode()


# -- docstrings ---------------------------------------------------------------


class _Docstring(typing.NamedTuple):
    summary: str
    params: dict[str, str]


_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_ARGS_HEADERS = {"Args", "Arguments", "Parameters", "Params"}
_PARAM = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> _Docstring:
    """Summary (first paragraph) and the Google-style ``Args:`` descriptions."""
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line.strip()):
            break
        summary_lines.append(line.strip())
    summary = " ".join(summary_lines)

    params: dict[str, str] = {}
    in_args = False
    section_indent = 0
    item_indent: int | None = None
    current: str | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        header = _SECTION.match(stripped)
        if not in_args:
            if header and header.group(1) in _ARGS_HEADERS:
                in_args, section_indent, item_indent, current = True, indent, None, None
            continue
        if not stripped:
            continue
        if indent <= section_indent:  # the next section (Returns:, Raises:, ...)
            in_args = False
            continue
        if item_indent is None:
            item_indent = indent
        m = _PARAM.match(stripped)
        if indent == item_indent and m:
            current = m.group(1)
            params[current] = m.group(2).strip()
        elif current is not None:  # a continuation line
            params[current] = f"{params[current]} {stripped}".strip()
    return _Docstring(summary, {k: v for k, v in params.items() if v})
