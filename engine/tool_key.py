"""The tool key: what the tool-duration predictor learns per, computed one way for every caller
(the SDK, the HTTP server, and both replay modes).

A tool's key is its name, except for shell tools, whose name says nothing about how long
they run: their key is the program the command runs (``cd /testbed && pytest -x`` ->
``pytest``), since one shell tool runs both 0.1 s and 10-minute commands.

    tool_key("shell", {"command": "cd /repo && FOO=1 pytest -x"})   # 'pytest'
    tool_key("str_replace_editor", {"command": "view"})            # 'str_replace_editor'
"""

from __future__ import annotations

import re
import shlex
from typing import Any

# Function-calling tools that run a shell command: their name says nothing, the command does.
SHELL_TOOLS = {"bash", "shell", "sh", "execute_bash", "run_bash", "exec_command", "run_command",
               "run_shell_command", "terminal", "cmd", "execute_command", "local_shell"}
_SEPARATORS = re.compile(r"\s*(?:&&|\|\||;)\s*")
_SETUP = {"cd", "export", "source", ".", "set", "pushd", "popd"}  # prefixes that are not the work
_WRAPPERS = {"sudo", "env", "time", "nohup", "command", "exec"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def command_program(command: str) -> str:
    """The program a shell command runs: first word, past ``cd x &&``, env assignments and wrappers.

    Why skip ``cd /testbed &&``: agents prefix most commands with it, and the tool that
    decides the duration is what follows.

    >>> command_program("cd /testbed && FOO=1 timeout 60 python -m pytest -x")
    'python'
    """
    lines = [ln for ln in command.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return ""
    programs = [_segment_program(seg) for seg in _SEPARATORS.split(lines[0])]
    programs = [p for p in programs if p]
    work = [p for p in programs if p not in _SETUP]
    return (work or programs or [""])[0]


def _segment_program(segment: str) -> str:
    words = shell_words(segment)
    while words and (_ASSIGNMENT.match(words[0]) or words[0] in _WRAPPERS):
        wrapper, words = words[0] in _WRAPPERS, words[1:]
        while wrapper and words and words[0].startswith("-"):  # `sudo -E`, `env -i`
            words = words[1:]
    if words and words[0] == "timeout":
        words = [w for w in words[1:] if not w.startswith("-")][1:]  # drop the time limit
    return words[0].rsplit("/", 1)[-1] if words else ""


def shell_command_of(name: str, arguments: Any) -> str | None:
    """The command string of a shell-like function call (``bash`` with ``command``/``cmd``), else None."""
    if name.lower() not in SHELL_TOOLS or not isinstance(arguments, dict):
        return None
    cmd = arguments.get("command", arguments.get("cmd"))
    if isinstance(cmd, list):  # some harnesses pass argv
        cmd = " ".join(str(c) for c in cmd)
    return cmd if isinstance(cmd, str) and cmd.strip() else None


def tool_key(name: str, arguments: Any = None) -> str:
    """The predictor's key for a call of tool ``name`` with ``arguments`` (see the module doc).

    >>> tool_key("bash", {"command": "cd /testbed && python -m pytest"}), tool_key("search", {"q": "x"})
    ('python', 'search')
    """
    command = shell_command_of(name, arguments)
    return (command_program(command) if command else "") or name


def shell_words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=False)
    except ValueError:  # unbalanced quotes in a heredoc or a half-written command
        return text.split()
