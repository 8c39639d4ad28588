"""Built-in tools: a bash shell, a Python interpreter, and an HTTP GET.

The shell and Python tools are confined (``tether.runtime.tool_runtime.Sandbox``):

- they run in their own work directory, the only place they can write (the
  rest of the filesystem is read-only; ``/tmp`` is private), without network;
- they see a scrubbed environment: ``PATH``, locale variables, ``HOME`` set
  to the work dir, plus the names in ``env_allowlist`` and the values in ``env``;
- rlimits (``Limits``: CPU time, address space, file size, processes) apply;
- the ``timeout_s`` a tool is made with is a ceiling: a longer timeout the
  model asks for is lowered to it. Then the process group is killed.

The isolation is bubblewrap (``bwrap``) where it works, else user namespaces
(``unshare``); each result's ``metadata["isolation"]`` and the tool's
``sandbox.describe()`` say which. With neither, making a tool raises
``ConfinementError`` unless ``allow_unconfined=True`` (or
``TETHER_ALLOW_UNCONFINED=1``); the module-level ``shell`` and ``python``
tools (on a temporary work dir per process) return that error as their result.

Each tool sets ``Tool.timeout_s`` a little above its ceiling, so a tool
executor's limit only ever acts as a backstop.

Example::

    from tether.agents.builtin_tools import http_fetch, make_python_tool, make_shell_tool

    shell = make_shell_tool(repo_dir, timeout_s=60)   # a coder agent's shell
    shell.sandbox.describe()["isolation"]             # "bwrap"
    await shell.invoke({"command": "git status --short"})
    await make_python_tool(repo_dir).invoke({"code": "print(2 ** 10)"})
"""

# No ``from __future__ import annotations`` here: the tools' inner functions
# are introspected for their signatures, and string annotations would be
# resolved against module globals only.

import os
from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import Field

from tether.agents.tools import Tool, ToolOutput, tool
from tether.runtime import tool_runtime
from tether.runtime.tool_runtime import ConfinementError, Limits, Sandbox, ShellResult

__all__ = [
    "BUILTIN_TOOLS", "ConfinementError", "Limits", "Sandbox", "http_fetch", "make_python_tool", "make_shell_tool",
    "python", "shell",
]

DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0
# How much longer than the tool's own limit the executor waits before giving up.
_EXECUTOR_GRACE_S = 10.0

# No upper bound in the schema: a longer timeout is lowered to the tool's ceiling, not refused.
TimeoutSeconds = Annotated[float, Field(gt=0)]


def _output(result: ShellResult, requested_timeout_s: float | None) -> ToolOutput:
    metadata = {
        "isolation": result.isolation,
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "timeout_s": result.timeout_s,
        "duration_s": result.duration_s,
    }
    if requested_timeout_s is not None and requested_timeout_s > result.timeout_s:
        metadata["requested_timeout_s"] = requested_timeout_s
    return ToolOutput(result.to_text(), metadata=metadata)


def _sandbox(
    workdir: str | os.PathLike[str] | None,
    timeout_s: float,
    sandbox: Sandbox | None,
    options: dict,
) -> Sandbox:
    if sandbox is not None:
        if workdir is not None or any(v is not None for v in options.values()):
            raise TypeError("pass either sandbox= or the work dir and confinement options, not both")
        return sandbox
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}], got {timeout_s}")
    given = {k: v for k, v in options.items() if v is not None}
    return Sandbox(workdir, timeout_s=timeout_s, **given)


def _ceiling_note(box: Sandbox) -> str:
    return f"at most {box.timeout_s:g}; a larger value is lowered to {box.timeout_s:g}"


def _with_sandbox(t: Tool, box: Sandbox) -> Tool:
    t.sandbox = box  # kept when the tool is pickled (see Tool.__reduce__)
    return t


def _shell_tool(box: Sandbox, name: str, with_cwd: bool = False) -> Tool:
    if with_cwd:  # the model may pick a subdirectory of the work dir

        def run(command: str, cwd: str | None = None, timeout_s: TimeoutSeconds = box.timeout_s) -> ToolOutput:
            return _output(box.run_shell(command, timeout_s, cwd), timeout_s)

    else:

        def run(command: str, timeout_s: TimeoutSeconds = box.timeout_s) -> ToolOutput:
            return _output(box.run_shell(command, timeout_s), timeout_s)

    cwd_doc = ("\n            cwd: a directory inside the working directory, relative to it (default: the "
               "working directory itself)." if with_cwd else "")
    run.__doc__ = f"""Run a bash command and return its combined stdout and stderr, then its exit code.

        Args:
            command: the bash command line to run.{cwd_doc}
            timeout_s: seconds after which the command and all its child processes are killed ({_ceiling_note(box)}).
        """
    where = "its own working directory" if box._workdir is None else f"the working directory {box._workdir}"
    rules = ""
    if not box.allow_unconfined:  # then it runs confined or not at all
        rules = " Only that directory (and a private /tmp) is writable." + ("" if box.network else " No network.")
    description = (f"Run a bash command in {where} and return its combined stdout and stderr, then its exit "
                   f"code.{rules}")
    t = tool(run, name=name, description=description, timeout_s=box.timeout_s + _EXECUTOR_GRACE_S)
    return _with_sandbox(t, box)


def make_shell_tool(
    cwd: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    name: str = "shell",
    *,
    allow_unconfined: bool | None = None,
    env_allowlist: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    network: bool | None = None,
    isolation: str | None = None,
    sandbox: Sandbox | None = None,
    check: bool = True,
) -> Tool:
    """A confined shell tool whose commands run in the work dir ``cwd``, for at most ``timeout_s``.

    ``cwd`` ``None``: a temporary directory. The keyword options are ``Sandbox``'s
    (or pass a ``sandbox``). With ``check`` (default), raises ``ConfinementError``
    now if this machine cannot confine it and unconfined use is not allowed.

    Example::

        coder_tools = [make_shell_tool("/tmp/repo", timeout_s=120, env_allowlist=["GIT_AUTHOR_NAME"])]
    """
    box = _sandbox(cwd, timeout_s, sandbox, dict(
        allow_unconfined=allow_unconfined, env_allowlist=env_allowlist, env=env, limits=limits, network=network,
        isolation=isolation))
    if check:
        box.isolation()
    return _shell_tool(box, name)


def make_python_tool(
    workdir: str | os.PathLike[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    name: str = "python",
    *,
    allow_unconfined: bool | None = None,
    env_allowlist: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    limits: Limits | None = None,
    network: bool | None = None,
    isolation: str | None = None,
    sandbox: Sandbox | None = None,
    check: bool = True,
) -> Tool:
    """A confined Python tool: each call a fresh interpreter in ``workdir``, for at most ``timeout_s``.

    Options as ``make_shell_tool``'s.

    Example::

        calc = make_python_tool(timeout_s=10, limits=Limits(address_space_bytes=1 << 30))
    """
    box = _sandbox(workdir, timeout_s, sandbox, dict(
        allow_unconfined=allow_unconfined, env_allowlist=env_allowlist, env=env, limits=limits, network=network,
        isolation=isolation))
    if check:
        box.isolation()

    def run(code: str, timeout_s: TimeoutSeconds = box.timeout_s) -> ToolOutput:
        return _output(box.run_python(code, timeout_s), timeout_s)

    run.__doc__ = f"""Run Python code in a fresh interpreter and return what it prints, then its exit code.

        State does not persist between calls; print what you want to see.
        Files written to the working directory do persist.

        Args:
            code: the Python source to run.
            timeout_s: seconds after which the interpreter and its child processes are killed ({_ceiling_note(box)}).
        """
    return _with_sandbox(tool(run, name=name, timeout_s=box.timeout_s + _EXECUTOR_GRACE_S), box)


# The module-level tools share one sandbox: a temporary work dir per process,
# made on first use. Nothing is probed at import; a machine that cannot confine
# them gets the ConfinementError as the tool's (error) result.
_default_sandbox = Sandbox(None, timeout_s=DEFAULT_TIMEOUT_S)

shell: Tool = _shell_tool(_default_sandbox, "shell", with_cwd=True)
python: Tool = make_python_tool(sandbox=_default_sandbox, check=False)


@tool(timeout_s=60.0)
def http_fetch(url: str) -> str:
    """Fetch a URL with HTTP GET and return the status line and the body as text.

    Args:
        url: an http:// or https:// URL.
    """
    return tool_runtime.http_fetch(url, timeout_s=30.0)


BUILTIN_TOOLS: list[Tool] = [shell, python, http_fetch]
