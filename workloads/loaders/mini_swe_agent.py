"""mini-swe-agent trajectories -> programs.

Two forms, both OpenAI-style message lists (turns are cut as in ``openai_messages``):

- older (v1): ``{"messages": [...]}`` or a bare list; plain ``{"role", "content"}``
  messages; the assistant writes one fenced ```` ```bash ```` (later
  ```` ```mswea_bash_command ````) block, the next user message is the observation.
  No timing: durations are drawn.
- newer (v2, ``"trajectory_format": "mini-swe-agent-1.1"``): each message is the
  model's native message plus ``extra``. An assistant's ``extra`` has
  ``actions`` ([{"command": ...}]), ``response`` (the raw completion, with
  ``usage``) and ``timestamp`` (when the answer arrived); an observation's
  ``extra`` has ``timestamp`` (when the command finished), ``returncode`` and
  ``raw_output``. With tool calling, observations are ``tool`` messages.

Duration = timestamp of the last observation before the next assistant message
minus the assistant's timestamp. Token counts come from ``usage`` when present
(output = ``completion_tokens``; appended = this prompt - previous prompt -
previous completion), else from the text.

    path = Path("django-11099.traj.json")
    trace = load_mini_swe_agent(path, read_json(path), seed=0)
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ..durations import classify_command, command_program, program_rng
from ..trace import Trace, TraceError
from .formats import TRACE_FORMATS, TraceFormat
from .openai_messages import ToolInfo, conversation_to_program, file_stem, has_messages, openai_tool

# The action block: mini-swe-agent v2 writes ```mswea_bash_command, v1 wrote ```bash.
ACTION_RE = re.compile(r"```(?:mswea_bash_command|bash)\s*\n(.*?)\n```", re.DOTALL)
OBSERVATION_ROLES = ("user", "tool")


def load_mini_swe_agent(path: Path, data: Any, seed: int = 0) -> Trace:
    """One program from a mini-swe-agent trajectory file (older or newer form); ``data``: its parsed JSON."""
    if isinstance(data, dict):
        if "messages" not in data:
            raise TraceError(f"{path}: messages: missing")
        messages = data["messages"]
    else:
        messages = data
    pid = file_stem(path)
    program = conversation_to_program(messages, program_id=pid, source=f"mini-swe-agent:{path.name}",
                                      rng=program_rng(seed, pid), where=str(path), tool_of=mini_tool,
                                      timing_of=observation_delay, usage_of=usage)
    meta = {}
    if isinstance(data, dict) and isinstance(data.get("info"), dict) and data["info"].get("mini_version"):
        meta["mini_version"] = data["info"]["mini_version"]
    return Trace(programs=[program], meta=meta)


def is_mini_swe_agent(data: Any) -> bool:
    """Whether parsed JSON looks like a mini-swe-agent trajectory rather than a plain chat log."""
    if isinstance(data, dict):
        if str(data.get("trajectory_format", "")).startswith("mini-swe-agent"):
            return True
        if isinstance(data.get("info"), dict) and "mini_version" in data["info"]:
            return True
        messages = data.get("messages")
    else:
        messages = data
    if not isinstance(messages, list):
        return False
    msgs = [m for m in messages if isinstance(m, dict)]
    if any(isinstance(m.get("extra"), dict) for m in msgs):
        return True
    if any(m.get("tool_calls") or m.get("role") == "tool" for m in msgs):
        return False  # function calling without mini's extras: a plain OpenAI log
    return any(m.get("role") == "assistant" and ACTION_RE.search(str(m.get("content") or "")) for m in msgs)


def mini_tool(msg: dict[str, Any]) -> ToolInfo | None:
    """The command a mini-swe-agent answer ran: ``extra.actions``, a tool call, or the one fenced block.

    An answer with zero or several blocks was a format error in mini-swe-agent: nothing ran.
    """
    extra = msg.get("extra") if isinstance(msg.get("extra"), dict) else {}
    actions = extra.get("actions")
    if isinstance(actions, list) and actions and isinstance(actions[0], dict) and \
            isinstance(actions[0].get("command"), str):
        return _shell(actions[0]["command"])
    if msg.get("tool_calls"):
        return openai_tool(msg)
    blocks = ACTION_RE.findall(str(msg.get("content") or ""))
    return _shell(blocks[0].strip()) if len(blocks) == 1 else None


def observation_delay(messages: list[dict[str, Any]], a: int, end: int) -> float | None:
    """Seconds from the assistant's timestamp to its last observation's, or None if not timed."""
    t0 = timestamp(messages[a], f"messages.{a}")
    if t0 is None:
        return None
    last = None
    for j in range(a + 1, end):
        if messages[j].get("role") in OBSERVATION_ROLES:
            t = timestamp(messages[j], f"messages.{j}")
            if t is not None:
                last = (j, t)
    if last is None:
        return None
    j, t1 = last
    if t1 < t0:
        raise ValueError(f"messages.{j}.extra.timestamp: {t1} is before the assistant's ({t0}) "
                         f"at messages.{a}: negative duration")
    return t1 - t0


def usage(msg: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt_tokens, completion_tokens) from ``extra.response.usage`` or ``usage``."""
    extra = msg.get("extra") if isinstance(msg.get("extra"), dict) else {}
    response = extra.get("response") if isinstance(extra.get("response"), dict) else {}
    u = response.get("usage") or msg.get("usage") or extra.get("usage")
    if not isinstance(u, dict):
        return None, None
    prompt = u.get("prompt_tokens", u.get("input_tokens"))
    completion = u.get("completion_tokens", u.get("output_tokens"))
    return (prompt if isinstance(prompt, int) and prompt >= 0 else None,
            completion if isinstance(completion, int) and completion >= 0 else None)


def timestamp(msg: dict[str, Any], field: str) -> float | None:
    """A message's time in seconds: ``extra.timestamp`` (epoch float) or a top-level ``timestamp``."""
    extra = msg.get("extra") if isinstance(msg.get("extra"), dict) else {}
    if "timestamp" in extra:
        key, value = "extra.timestamp", extra["timestamp"]
    else:
        key, value = "timestamp", msg.get("timestamp")
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    raise ValueError(f"{field}.{key}: not a time ({value!r})"[:300])


def _shell(command: str) -> ToolInfo:
    return command_program(command) or "bash", classify_command(command), {"command": command}


TRACE_FORMATS.register("mini-swe-agent", TraceFormat(
    suffixes=(".traj", ".json"), description="a mini-swe-agent trajectory (.traj.json/.json)",
    detect=lambda path, content: has_messages(content.json) and is_mini_swe_agent(content.json),
    load=lambda path, content, seed: load_mini_swe_agent(path, content.json, seed)))
