"""Tool classes and tool durations: which class a tool call belongs to, and how long it runs.

Trajectories without timing (mini-swe-agent's older files, OpenAI-style
message lists) still need a duration for every tool call, so replays draw one,
seeded, from a lognormal per tool class fitted to published figures (see
``CLASS_DURATIONS`` and tests/data/traces/README.md)::

    rng = program_rng(seed=0, program_id="django-11099")
    cls = classify_tool("bash", arguments={"command": "cd /testbed && python -m pytest tests/"})  # "test"
    draw_duration(cls, rng)        # e.g. 3.1 (seconds)

Classification is by name and, for shell commands, by the command itself:
pytest -> test, grep/find/rg -> search, cat/ls/sed -n -> view, sed -i/``cat > f`` -> edit, else shell.
"""

from __future__ import annotations

import math
import re
import zlib
from statistics import NormalDist
from typing import Any

import numpy as np

from tether.engine.tool_key import SHELL_TOOLS, command_program, shell_command_of, shell_words as _words

from .trace import TOOL_CLASSES

# ---- durations ----------------------------------------------------------------------

# (median seconds, sigma of log) per tool class. Figures from tests/data/traces/README.md:
CLASS_DURATIONS: dict[str, tuple[float, float]] = {
    # SWE-agent's own local runs: tool time median 0.14-0.29 s; reading a file is the
    # cheapest step, so view takes the low end. sigma: assumed, p99 ~0.6 s.
    "view": (0.15, 0.6),
    # Same SWE-agent figure; grep/find walk the repository, a little slower and wider.
    "search": (0.20, 0.8),
    # Upper end of SWE-agent's 0.14-0.29 s median; edits run a linter (the shared
    # marshmallow trajectory's edits take 0.5-1.0 s), hence the wider sigma.
    "edit": (0.29, 0.7),
    # TraceLab: shell commands p50 ~0.85 s, p99 ~235 s -> sigma = ln(235/0.85)/z(0.99) = 2.42.
    "shell": (0.85, 2.42),
    # "Tests slower" (README) with `pip install` near 2 s as a yardstick for a process that
    # imports a package: assumed median 3 s, p99 ~30 s. No published per-class figure.
    "test": (3.0, 1.0),
    # Everything else follows TraceLab's overall tool latency: p50 0.3 s, p90 13.6 s ->
    # sigma = ln(13.6/0.3)/z(0.9) = 2.98 (which also gives its "calls over a minute are
    # 4% of calls and 85% of tool time").
    "other": (0.30, 2.98),
}

# mini-swe-agent's SWE-bench config kills a command after 60 s (environment.timeout: 60),
# so a drawn duration is clipped there: drawn durations stand in for such runs. The clip
# also keeps sample means stable (uncapped, 'other' has a coefficient of variation ~80).
# Pass cap_s=None for the uncapped TraceLab law.
DEFAULT_CAP_S: float | None = 60.0


def draw_duration(tool_class: str, rng: np.random.Generator, cap_s: float | None = DEFAULT_CAP_S) -> float:
    """One duration in seconds for a tool of ``tool_class``, lognormal, clipped at ``cap_s``.

    >>> rng = np.random.default_rng(0)
    >>> 0 < draw_duration("view", rng) < 60
    True
    """
    median, sigma = CLASS_DURATIONS.get(tool_class, CLASS_DURATIONS["other"])
    d = float(median * math.exp(sigma * rng.standard_normal()))
    return min(d, cap_s) if cap_s is not None else d


def mean_duration(tool_class: str, cap_s: float | None = DEFAULT_CAP_S) -> float:
    """Expected value of ``draw_duration(tool_class, ·, cap_s)``, e.g. to check sample means."""
    median, sigma = CLASS_DURATIONS.get(tool_class, CLASS_DURATIONS["other"])
    return lognormal_mean(median, sigma, cap_s)


def lognormal_mean(median: float, sigma: float, cap: float | None = None) -> float:
    """E[min(X, cap)] for X lognormal with the given median and log-sigma (cap None: E[X]).

    >>> round(lognormal_mean(1.0, 0.0, None), 6)
    1.0
    """
    mu = math.log(median)
    if cap is None:
        return math.exp(mu + sigma * sigma / 2)
    if sigma == 0:
        return min(median, cap)
    z = (math.log(cap) - mu) / sigma
    n = NormalDist()
    return math.exp(mu + sigma * sigma / 2) * n.cdf(z - sigma) + cap * (1 - n.cdf(z))


def program_rng(seed: int, program_id: str) -> np.random.Generator:
    """A generator seeded by (seed, program id): a program's draws don't depend on the others'."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(program_id.encode())])


# ---- classification -----------------------------------------------------------------

# File editors whose first argument says whether they read or write (SWE-agent, OpenHands).
EDITOR_TOOLS = {"str_replace_editor", "str_replace_based_edit_tool", "edit_file", "file_editor"}

# Tool and program names -> class. Covers shell programs, SWE-agent commands, and the
# tool names in TraceLab's Claude Code / Codex rounds. Lower case.
NAME_CLASSES: dict[str, str] = {
    **dict.fromkeys(["pytest", "py.test", "tox", "nox", "runtests.py", "./runtests.py", "unittest"], "test"),
    **dict.fromkeys(["grep", "egrep", "fgrep", "rg", "ag", "ack", "find", "fd", "locate",
                     "find_file", "search_file", "search_dir", "glob", "websearch", "web_search"], "search"),
    **dict.fromkeys(["cat", "head", "tail", "less", "more", "nl", "ls", "tree", "wc", "file", "stat",
                     "open", "goto", "scroll_up", "scroll_down", "read", "view", "notebookread",
                     "read_file", "list_dir"], "view"),
    **dict.fromkeys(["edit", "create", "insert", "append", "write", "multiedit", "notebookedit",
                     "apply_patch", "patch", "tee", "touch", "mkdir", "cp", "mv", "rm",
                     "write_file"], "edit"),
    **dict.fromkeys(["bash", "exec_command", "write_stdin", "shell", "python", "python3", "pip",
                     "make", "git", "echo", "cd"], "shell"),
    **dict.fromkeys(["submit", "exit", "task", "todowrite", "webfetch", "web_fetch", "user"], "other"),
}

def classify_command(command: str) -> str:
    """Tool class of a shell command (or a SWE-agent command line such as ``find_file x.py``).

    >>> classify_command("sed -i 's/a/b/' f.py"), classify_command("sed -n 1,20p f.py")
    ('edit', 'view')
    """
    prog = command_program(command)
    rest = command.strip()
    low = prog.lower()
    if low.startswith("python") and re.search(r"-m\s+(pytest|unittest)\b", rest):
        return "test"
    if low in ("npm", "yarn", "cargo", "go", "make") and re.search(r"\btest\b", rest):
        return "test"
    if low == "sed":
        return "edit" if re.search(r"\s-i\b|\s--in-place\b", rest) else "view"
    if low == "cat" and re.search(r"(^|[^>])>{1,2}\s*[\w./-]", _first_line(rest)):
        return "edit"  # `cat > file <<EOF` writes a file
    if low == "git":
        sub = next((w for w in _words(_first_line(rest))[1:] if not w.startswith("-")), "")
        return {"diff": "view", "show": "view", "log": "view", "status": "view", "grep": "search",
                "apply": "edit", "checkout": "edit", "stash": "edit"}.get(sub, "shell")
    if low in EDITOR_TOOLS:
        sub = (_words(_first_line(rest))[1:2] or [""])[0]
        return "view" if sub == "view" else "edit"
    return NAME_CLASSES.get(low, "shell")


def classify_tool(name: str, command: str | None = None, arguments: Any = None) -> str:
    """Tool class of a call by its name, command (shell tools) or arguments (editor tools).

    >>> classify_tool("str_replace_editor", arguments={"command": "view", "path": "a.py"})
    'view'
    >>> classify_tool("WebSearch"), classify_tool("submit")
    ('search', 'other')
    """
    low = name.lower()
    if low in EDITOR_TOOLS and isinstance(arguments, dict):
        return "view" if arguments.get("command") == "view" else "edit"
    command = command or shell_command_of(name, arguments)
    if command:
        return classify_command(command)
    cls = NAME_CLASSES.get(low, "other")
    return cls if cls in TOOL_CLASSES else "other"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
