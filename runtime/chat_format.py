"""Tool calling for chat templates that have no tool support.

The default model's chat template (SmolLM2, ChatML) knows only ``role`` and a
string ``content``. Tether therefore renders the tool schemas into the system
prompt, asks the model to answer with ``<tool_call>{...}</tool_call>`` blocks,
and parses those blocks back out of the reply:

    msgs = apply_tools_to_messages(messages, tools)          # ready for the template
    reply = parse_tool_calls(generated_text, tool_names={"get_weather"})
    reply.tool_calls[0].name, reply.tool_calls[0].arguments  # "get_weather", {"city": "Paris"}

Earlier turns round-trip: an assistant message carrying ``tool_calls`` is
rendered back into ``<tool_call>`` text, and a ``tool`` message becomes a
``user`` message holding a ``<tool_response>`` block (roles the template and
the model both know).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Collection

from tether.engine.guided import JSON_OPTIONS, Guided, bounded_numbers, json_schema_error

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_FORMAT_HINT = f'write {TOOL_CALL_OPEN}{{"name": "<function name>", "arguments": {{...}}}}{TOOL_CALL_CLOSE}'


class ChatFormatError(ValueError):
    """The messages, tools or tool_choice cannot be rendered; the message says why."""


@dataclass
class ToolCall:
    """One parsed call: ``arguments`` is a dict (OpenAI sends it as a JSON string; see ``to_openai``)."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI wire shape: ``{"id", "type": "function", "function": {"name", "arguments": "<json>"}}``."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


@dataclass
class ParsedReply:
    """A model reply split into plain text, well-formed tool calls and errors for malformed blocks."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# ---- rendering ----------------------------------------------------------------------

def render_tool_prompt(tools: list[dict[str, Any]], tool_choice: Any = "auto") -> str:
    """The system-prompt text that lists ``tools`` and explains how to call them.

    Example::

        render_tool_prompt([{"type": "function", "function": {"name": "get_weather",
                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])

    ``tools`` are OpenAI-style (``{"type": "function", "function": {...}}``; a bare
    function dict is accepted too). ``tool_choice`` adds an instruction:
    ``"required"`` (call at least one), a function name or
    ``{"type": "function", "function": {"name": ...}}`` (call that one).
    """
    lines = [
        "# Tools",
        "",
        "You may call one or more functions to help with the user's request.",
        "The functions are described as JSON schemas within <tools></tools> tags:",
        "<tools>",
        *(json.dumps(_as_openai_tool(t), ensure_ascii=False) for t in tools),
        "</tools>",
        "",
        "To call a function, answer with one JSON object per call, each within "
        f"{TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} tags:",
        f'{TOOL_CALL_OPEN}{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}'
        f"{TOOL_CALL_CLOSE}",
        "Function results come back within <tool_response></tool_response> tags.",
    ]
    forced = _forced_name(tool_choice)
    if forced is not None:
        lines.append(f"You must call the function {forced!r} now.")
    elif tool_choice == "required":
        lines.append("You must call at least one function now.")
    else:
        lines.append("If no function is needed, answer the user directly.")
    return "\n".join(lines)


def apply_tools_to_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                            tool_choice: Any = None) -> list[dict[str, Any]]:
    """Messages (``{"role", "content"}`` with string content) ready for a plain chat template.

    Example::

        apply_tools_to_messages(
            [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"}],
            tools=[weather_tool])
        # -> system (tool prompt), user, assistant ("<tool_call>...</tool_call>"),
        #    user ("<tool_response name=\\"get_weather\\" ...>18C, sunny</tool_response>")

    The tool prompt extends the first system (or ``developer``) message, or forms
    a new one. ``tool_choice="none"`` lists no tools, but earlier tool turns are
    still rendered. Raises ``ChatFormatError`` for what cannot be rendered.
    """
    tools = list(tools or [])
    _check_tool_choice(tools, tool_choice)
    names_by_call_id: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ChatFormatError(f"messages[{i}]: expected an object, got {type(msg).__name__}")
        role = msg.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        if role in ("system", "user"):
            out.append({"role": role, "content": _text_of(msg.get("content"), i)})
        elif role == "assistant":
            out.append({"role": "assistant", "content": _render_assistant(msg, i, names_by_call_id)})
        elif role == "tool":
            block = _render_tool_response(msg, i, names_by_call_id)
            prev = out[-1] if out else None
            if prev is not None and prev.get("_tool_responses"):  # parallel calls: one user turn for all results
                prev["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_responses": True})
        else:
            raise ChatFormatError(f"messages[{i}].role: unsupported role {role!r}; "
                                  "use system, developer, user, assistant or tool")
    for m in out:
        m.pop("_tool_responses", None)
    if tools and tool_choice != "none":
        prompt = render_tool_prompt(tools, tool_choice or "auto")
        if out and out[0]["role"] == "system":
            out[0]["content"] = (out[0]["content"].rstrip() + "\n\n" + prompt).lstrip()
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def tool_names_of(tools: list[dict[str, Any]] | None) -> list[str]:
    """The function names declared in OpenAI-style ``tools``.

    Example::

        tool_names_of([{"type": "function", "function": {"name": "search"}}])   # ["search"]
    """
    return [_as_openai_tool(t)["function"]["name"] for t in tools or []]


# ---- constrained tool calls ---------------------------------------------------------

def tool_call_grammar(tools: list[dict[str, Any]] | None, tool_choice: Any = "auto",
                      parallel_tool_calls: bool = True, answer_schema: dict[str, Any] | None = None
                      ) -> Guided | None:
    """A grammar that makes the reply's ``<tool_call>`` blocks valid calls of ``tools`` (None: no constraint).

    Example::

        g = tool_call_grammar([weather_tool], "required")   # -> Guided(lark=...)
        SamplingParams(max_tokens=128, guided=g)

    Each block holds ``{"name": <one of the tools>, "arguments": <that tool's
    parameters schema>}``. ``"required"`` and a named function allow only calls
    (a named function: only that one); ``"auto"`` allows plain text (with no
    ``<tool_call>`` in it) or text followed by calls; ``"none"`` or no tools: None.
    ``parallel_tool_calls=False`` allows one call. With ``answer_schema``, the
    plain answer ``"auto"`` allows is a JSON value of that schema instead of text.
    Raises ``ChatFormatError`` naming a tool whose parameters are no usable schema.
    """
    tools = list(tools or [])
    _check_tool_choice(tools, tool_choice)
    if not tools or tool_choice == "none":
        return None
    forced = _forced_name(tool_choice)
    fns = [_as_openai_tool(t)["function"] for t in tools]
    for i, fn in enumerate(fns):
        problem = json_schema_error(fn["parameters"]) if fn.get("parameters") is not None else None
        if problem:
            raise ChatFormatError(f"tools[{i}].function.parameters: not a usable JSON schema ({problem})")
    if forced is not None:
        fns = [f for f in fns if f["name"] == forced]
    bodies = " | ".join(f"%json {json.dumps(bounded_numbers(_call_schema(f)), ensure_ascii=False)}" for f in fns)
    more = '("\\n" call)*' if parallel_tool_calls else ""
    if tool_choice in (None, "auto") and answer_schema is not None:
        answer = json.dumps({**bounded_numbers(answer_schema), "x-guidance": JSON_OPTIONS}, ensure_ascii=False)
        lark = f"start: answer | call {more}\nanswer: %json {answer}\n"
    elif tool_choice in (None, "auto"):
        # TEXT: prose with no tag; LEAD: prose up to and including the first tag (one lexeme, so the
        # lexer never has to guess where the prose ends).
        lark = (f"start: TEXT | first {more}\n"
                f'first: LEAD body "{TOOL_CALL_CLOSE}"\n'
                f"TEXT: /(?s:.+)/ & ~/(?s:.*{re.escape(TOOL_CALL_OPEN)}.*)/\n"
                f"LEAD: /(?s:.*{re.escape(TOOL_CALL_OPEN)})/ & ~/(?s:.*{re.escape(TOOL_CALL_OPEN)}.+)/\n")
    else:
        lark = f"start: call {more}\n"
    lark += f'call: "{TOOL_CALL_OPEN}" body "{TOOL_CALL_CLOSE}"\nbody: {bodies}\n'
    return Guided(lark=lark)


def _call_schema(fn: dict[str, Any]) -> dict[str, Any]:
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False, "x-guidance": JSON_OPTIONS}


# ---- parsing ------------------------------------------------------------------------

def parse_tool_calls(text: str, tool_names: Collection[str] | None = None) -> ParsedReply:
    """Split a model reply into text and ``<tool_call>`` blocks.

    Example::

        r = parse_tool_calls('Sure. <tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
        r.content, r.tool_calls[0].name, r.tool_calls[0].arguments   # "Sure.", "f", {"x": 1}

    A malformed block (bad JSON, no name, arguments not an object, a name not
    in ``tool_names`` when given, or a final block the model never closed) is
    left out of ``tool_calls`` and described in ``errors``, in words fit to
    send back to the model.
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    outside: list[str] = []
    pos = 0
    for n, m in enumerate(_BLOCK.finditer(text), start=1):
        outside.append(text[pos:m.start()])
        pos = m.end()
        call, err = _parse_block(m.group(1), n, tool_names)
        if call is not None:
            calls.append(call)
        else:
            errors.append(err)
    rest = text[pos:]
    cut = rest.find(TOOL_CALL_OPEN)
    if cut >= 0:  # opened and never closed: typically the reply hit max_tokens
        outside.append(rest[:cut])
        errors.append(f"tool call {len(calls) + len(errors) + 1}: the {TOOL_CALL_OPEN} block was never closed "
                      f"with {TOOL_CALL_CLOSE} (the reply may have been cut off); {_FORMAT_HINT}")
    else:
        outside.append(rest)
    return ParsedReply("".join(outside).strip(), calls, errors)


class ToolCallStreamFilter:
    """Streams the plain text of a reply while holding back its ``<tool_call>`` blocks.

    Example::

        f = ToolCallStreamFilter()
        for delta in deltas:
            send(f.feed(delta))          # text safe to show now
        tail, reply = f.finish()         # text still owed, and the parsed reply

    Text before the first ``<tool_call>`` is passed on as it arrives (a tail
    that might be the start of the tag is held until it is settled); everything
    after it waits for ``finish``, which parses the whole reply.
    """

    def __init__(self, tool_names: Collection[str] | None = None):
        self.tool_names = tool_names
        self.text = ""
        self._emitted = 0
        self._in_call = False

    def feed(self, delta: str) -> str:
        self.text += delta
        if self._in_call:
            return ""
        start = self.text.find(TOOL_CALL_OPEN, self._emitted)
        if start >= 0:
            self._in_call = True
            safe_end = start
        else:
            safe_end = len(self.text) - _partial_tag_len(self.text, TOOL_CALL_OPEN)
        out = self.text[self._emitted:safe_end]
        self._emitted = max(self._emitted, safe_end)
        return out

    def finish(self) -> tuple[str, ParsedReply]:
        """Text not yet emitted that belongs to the content, and the parsed reply."""
        reply = parse_tool_calls(self.text, self.tool_names)
        if not self._in_call:
            return self.text[self._emitted:], reply
        if not reply.tool_calls:  # nothing usable was parsed: show the model's text as it was
            return self.text[self._emitted:], reply
        after = parse_tool_calls(self.text[self._emitted:], self.tool_names).content
        return ("\n" + after if after and self._emitted else after), reply


# ---- helpers ------------------------------------------------------------------------

def _partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0


def _as_openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ChatFormatError(f"tools: each tool must be an object, got {type(tool).__name__}")
    fn = tool.get("function") if tool.get("type", "function") == "function" and "function" in tool else tool
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ChatFormatError('tools: each tool needs {"type": "function", "function": {"name": ...}}')
    return {"type": "function", "function": {k: v for k, v in fn.items() if v is not None}}


def _forced_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function") or {}
        return fn.get("name") if isinstance(fn, dict) else None
    if isinstance(tool_choice, str) and tool_choice not in ("none", "auto", "required"):
        return tool_choice
    return None


def _check_tool_choice(tools: list[dict[str, Any]], tool_choice: Any) -> None:
    if tool_choice in (None, "none", "auto"):
        return
    if not tools:
        raise ChatFormatError(f"tool_choice {tool_choice!r} needs tools; give tools or omit tool_choice")
    if tool_choice == "required":
        return
    name = _forced_name(tool_choice)
    if name is None:
        raise ChatFormatError('tool_choice: expected "none", "auto", "required" or '
                              '{"type": "function", "function": {"name": ...}}')
    if name not in tool_names_of(tools):
        raise ChatFormatError(f"tool_choice names function {name!r}, which is not among the tools")


def _text_of(content: Any, i: int) -> str:
    """Message content as one string: OpenAI allows a string, null, or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text") and \
                    isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ChatFormatError(f"messages[{i}].content: unsupported content part {kind!r}; "
                                      "this model reads text only")
        return "".join(parts)
    raise ChatFormatError(f"messages[{i}].content: expected a string or a list of text parts")


def _render_assistant(msg: dict[str, Any], i: int, names_by_call_id: dict[str, str]) -> str:
    text = _text_of(msg.get("content"), i)
    blocks = []
    for j, tc in enumerate(msg.get("tool_calls") or []):
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ChatFormatError(f"messages[{i}].tool_calls[{j}]: expected "
                                  '{"id", "type": "function", "function": {"name", "arguments"}}')
        args: Any = fn.get("arguments")
        if isinstance(args, str):  # OpenAI sends arguments as a JSON string
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                pass  # render what the model wrote; it will see its own mistake
        if tc.get("id"):
            names_by_call_id[tc["id"]] = fn["name"]
        call = {"name": fn["name"], "arguments": {} if args is None else args}
        blocks.append(TOOL_CALL_OPEN + json.dumps(call, ensure_ascii=False) + TOOL_CALL_CLOSE)
    return "\n".join(([text] if text else []) + blocks)


def _render_tool_response(msg: dict[str, Any], i: int, names_by_call_id: dict[str, str]) -> str:
    call_id = msg.get("tool_call_id")
    name = msg.get("name") or names_by_call_id.get(call_id or "")
    attrs = "".join(f' {k}="{v}"' for k, v in (("name", name), ("id", call_id)) if v)
    return f"<tool_response{attrs}>\n{_text_of(msg.get('content'), i)}\n</tool_response>"


def _parse_block(body: str, n: int, tool_names: Collection[str] | None) -> tuple[ToolCall | None, str]:
    raw = body.strip()
    fenced = _FENCE.match(raw)
    if fenced:  # small models like to wrap JSON in a code fence
        raw = fenced.group(1)
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        return None, f"tool call {n}: invalid JSON ({e.msg} at character {e.pos}); {_FORMAT_HINT}"
    if not isinstance(obj, dict):
        return None, f"tool call {n}: expected a JSON object, got {type(obj).__name__}; {_FORMAT_HINT}"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, f'tool call {n}: missing "name" (a non-empty string); {_FORMAT_HINT}'
    name = name.strip()
    if tool_names is not None and name not in tool_names:
        known = ", ".join(sorted(tool_names)) or "none"
        return None, f"tool call {n}: unknown function {name!r}; available: {known}"
    args = obj.get("arguments", obj.get("parameters", {}))  # some models say "parameters"
    if isinstance(args, str):  # arguments given as a JSON string, OpenAI style
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            return None, f"tool call {n} ({name}): arguments are not valid JSON ({e.msg}); {_FORMAT_HINT}"
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None, (f'tool call {n} ({name}): "arguments" must be a JSON object, got '
                      f"{type(args).__name__}; {_FORMAT_HINT}")
    return ToolCall(name, args), ""
