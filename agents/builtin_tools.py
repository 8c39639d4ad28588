"""Built-in tools: a bash shell, a Python interpreter, and an HTTP GET.

Each enforces its own time limit on the work it starts (the subprocess group
is killed), and sets ``Tool.timeout_s`` a little above the largest limit it
accepts, so a tool executor's limit only ever acts as a backstop.

Example::

    from tether.agents.builtin_tools import http_fetch, make_shell_tool, python

    shell = make_shell_tool(cwd=repo_dir, timeout_s=60)   # a coder agent's shell
    await shell.invoke({"command": "git status --short"})
    await python.invoke({"code": "print(2 ** 10)"})
"""

# No ``from __future__ import annotations`` here: make_shell_tool's inner
# function is introspected for its signature, and string annotations would be
# resolved against module globals only.

from typing import Annotated

from pydantic import Field

from tether.agents.tools import Tool, tool
from tether.runtime import tool_runtime

__all__ = ["BUILTIN_TOOLS", "http_fetch", "make_shell_tool", "python", "shell"]

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0
# How much longer than the tool's own limit the executor waits before giving up.
_EXECUTOR_GRACE_S = 10.0

TimeoutSeconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_S)]


@tool(timeout_s=MAX_TIMEOUT_S + _EXECUTOR_GRACE_S)
def shell(command: str, cwd: str | None = None, timeout_s: TimeoutSeconds = DEFAULT_TIMEOUT_S) -> str:
    """Run a bash command and return its combined stdout and stderr, then its exit code.

    Args:
        command: the bash command line to run.
        cwd: the working directory (default: the tool process's current directory).
        timeout_s: seconds after which the command and all its child processes are killed.
    """
    return tool_runtime.run_shell(command, cwd=cwd, timeout_s=timeout_s).to_text()


def make_shell_tool(cwd: str, timeout_s: float = DEFAULT_TIMEOUT_S, name: str = "shell") -> Tool:
    """A shell tool whose commands always run in ``cwd``, ``timeout_s`` by default.

    Example::

        coder_tools = [make_shell_tool("/tmp/repo", timeout_s=120)]
    """
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {timeout_s}")

    def run(command: str, timeout_s: TimeoutSeconds = timeout_s) -> str:
        """Run a bash command and return its combined stdout and stderr, then its exit code.

        Args:
            command: the bash command line to run.
            timeout_s: seconds after which the command and all its child processes are killed.
        """
        return tool_runtime.run_shell(command, cwd=cwd, timeout_s=timeout_s).to_text()

    return tool(
        run,
        name=name,
        description=(
            "Run a bash command in the working directory "
            f"{cwd} and return its combined stdout and stderr, then its exit code."
        ),
        timeout_s=MAX_TIMEOUT_S + _EXECUTOR_GRACE_S,
    )


@tool(timeout_s=MAX_TIMEOUT_S + _EXECUTOR_GRACE_S)
def python(code: str, timeout_s: TimeoutSeconds = DEFAULT_TIMEOUT_S) -> str:
    """Run Python code in a fresh interpreter and return what it prints, then its exit code.

    State does not persist between calls; print what you want to see.

    Args:
        code: the Python source to run.
        timeout_s: seconds after which the interpreter and its child processes are killed.
    """
    return tool_runtime.run_python(code, timeout_s=timeout_s).to_text()


@tool(timeout_s=60.0)
def http_fetch(url: str) -> str:
    """Fetch a URL with HTTP GET and return the status line and the body as text.

    Args:
        url: an http:// or https:// URL.
    """
    return tool_runtime.http_fetch(url, timeout_s=30.0)


BUILTIN_TOOLS: list[Tool] = [shell, python, http_fetch]
