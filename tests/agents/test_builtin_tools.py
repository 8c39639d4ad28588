"""The built-in shell and Python tools as a model calls them: confined, with a timeout ceiling."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ray import cloudpickle

from tether.agents import builtin_tools
from tether.agents.builtin_tools import ConfinementError, Limits, make_python_tool, make_shell_tool
from tether.runtime import tool_runtime
from tether.runtime.tool_executor import LocalToolExecutor

CONFINES = any(reason is None for reason in tool_runtime.available_isolation().values())
needs_confinement = pytest.mark.skipif(not CONFINES, reason="neither bwrap nor unshare confines here")


@needs_confinement
async def test_shell_tool_is_confined_to_its_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    shell = make_shell_tool(tmp_path, timeout_s=10)
    out = await shell.invoke({"command": "echo hi > note.txt && ls; cd / && echo x > tether-escape; "
                                         "echo \"secret=$TETHER_TEST_SECRET\""})
    assert out.startswith("note.txt\n") and "tether-escape: Read-only file system" in out
    assert "secret=\n" in out and "hunter2" not in out
    assert (tmp_path / "note.txt").exists() and not Path("/tether-escape").exists()
    assert out.metadata["isolation"] in ("bwrap", "unshare")
    assert out.metadata["isolation"] == shell.sandbox.describe()["isolation"]
    assert out.metadata["exit_code"] == 0 and not out.is_error


@needs_confinement
async def test_model_given_timeout_is_clamped_to_the_configured_one(tmp_path):
    shell = make_shell_tool(tmp_path, timeout_s=1)
    assert shell.timeout_s == 1 + builtin_tools._EXECUTOR_GRACE_S  # the executor's backstop
    params = shell.openai_schema()["function"]["parameters"]["properties"]["timeout_s"]
    assert params["default"] == 1 and "at most 1;" in params["description"]
    start = time.monotonic()
    out = await shell.invoke({"command": "echo started; sleep 30", "timeout_s": 500})
    assert time.monotonic() - start < 3
    assert out == "started\n[timed out after 1s]" and not out.is_error  # text for the model, as before
    assert out.metadata["timed_out"] and out.metadata["timeout_s"] == 1
    assert out.metadata["requested_timeout_s"] == 500

    py = make_python_tool(tmp_path, timeout_s=1)
    out = await py.invoke({"code": "import time; print('before', flush=True); time.sleep(30)", "timeout_s": 60})
    assert out == "before\n[timed out after 1s]" and out.metadata["timeout_s"] == 1


@needs_confinement
async def test_python_tool_limits_and_work_dir(tmp_path):
    py = make_python_tool(tmp_path, timeout_s=10, limits=Limits(file_size_bytes=1 << 20))
    out = await py.invoke({"code": "import os; print(os.getcwd()); open('big', 'wb').write(b'x' * 3_000_000)"})
    assert out.startswith(f"{tmp_path}\n") and "File too large" in out and out.metadata["exit_code"] == 1
    out = await py.invoke({"code": "open('/etc/tether-escape', 'w')"})
    assert "Read-only file system" in out and not Path("/etc/tether-escape").exists()


@needs_confinement
async def test_module_level_tools_share_a_temporary_work_dir():
    out = await builtin_tools.shell.invoke({"command": "mkdir -p sub && echo 7 > sub/n && pwd"})
    workdir = out.splitlines()[0]
    assert workdir == builtin_tools.shell.sandbox.workdir and Path(workdir).name.startswith("tether-tool-")
    assert await builtin_tools.shell.invoke({"command": "cat n", "cwd": "sub"}) == "7\n[exit code 0]"
    out = await builtin_tools.shell.invoke({"command": "pwd", "cwd": "/"})
    assert out.is_error and "outside the tool's work dir" in out
    assert await builtin_tools.python.invoke({"code": "print(open('sub/n').read().strip())"}) == "7\n[exit code 0]"


@needs_confinement
async def test_shell_tool_pickles_with_its_sandbox(tmp_path):
    shell = make_shell_tool(tmp_path, timeout_s=7, env={"GREETING": "hello"})
    copy = cloudpickle.loads(cloudpickle.dumps(shell))
    assert copy.sandbox.timeout_s == 7 and copy.sandbox.workdir == str(tmp_path)
    out = await copy.invoke({"command": "echo $GREETING"})
    assert out == "hello\n[exit code 0]" and out.metadata["isolation"] in ("bwrap", "unshare")


@needs_confinement
async def test_executor_results_carry_the_metadata(tmp_path):
    r = await LocalToolExecutor().run(make_shell_tool(tmp_path, timeout_s=5), {"command": "pwd"})
    assert r.content == f"{tmp_path}\n[exit code 0]" and not r.is_error
    assert r.metadata["isolation"] in ("bwrap", "unshare") and r.metadata["exit_code"] == 0


def test_factory_arguments():
    with pytest.raises(ValueError, match="timeout_s must be in"):
        make_shell_tool("/tmp", timeout_s=0)
    with pytest.raises(ValueError, match="isolation must be"):
        make_shell_tool("/tmp", isolation="chroot")
    with pytest.raises(TypeError, match="either sandbox="):
        make_shell_tool("/tmp", sandbox=builtin_tools.shell.sandbox)


@pytest.fixture
def nothing_confines(monkeypatch):
    monkeypatch.setattr(tool_runtime, "_probe",
                        lambda kind: tool_runtime._Probe(False, None, False, f"{kind} not found on PATH"))
    monkeypatch.delenv(tool_runtime.ALLOW_UNCONFINED_ENV, raising=False)


async def test_unconfined_tools_are_refused_unless_allowed(nothing_confines, tmp_path):
    with pytest.raises(ConfinementError, match="apt-get install bubblewrap"):
        make_shell_tool(tmp_path)
    with pytest.raises(ConfinementError, match="allow_unconfined=True"):
        make_python_tool(tmp_path)
    # Made without the check (as the module-level tools are), the refusal is the model's error text.
    shell = make_shell_tool(tmp_path, check=False)
    out = await shell.invoke({"command": "echo ran > ran.txt"})
    assert out.is_error and out.startswith("error: ConfinementError: refusing to run the tool unconfined")
    assert not (tmp_path / "ran.txt").exists()

    shell = make_shell_tool(tmp_path, allow_unconfined=True)
    out = await shell.invoke({"command": "echo ran > ran.txt; pwd"})
    assert out == f"{tmp_path}\n[exit code 0]" and out.metadata["isolation"] == "none"
    assert shell.sandbox.describe()["isolation"] == "none"
    assert "Only that directory" not in shell.description  # no promise it cannot keep
