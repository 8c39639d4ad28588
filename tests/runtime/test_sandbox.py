"""Confined tool processes: work dir, filesystem isolation, environment, limits, timeout ceiling.

Each confinement test runs under every isolation this machine offers
(bubblewrap, user namespaces via unshare); a kind that does not work here is
skipped, and ``test_this_machine_confines`` says so when none does.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from tether.runtime import tool_runtime
from tether.runtime.tool_runtime import ConfinementError, Limits, Sandbox, available_isolation

KINDS = ("bwrap", "unshare")
AVAILABLE = available_isolation()


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    if AVAILABLE[request.param] is not None:
        pytest.skip(f"{request.param} does not confine here: {AVAILABLE[request.param]}")
    return request.param


@pytest.fixture
def work(tmp_path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def test_this_machine_confines():
    # Not skipped: on a machine like CI's, at least one kind must work, or every
    # confinement test below would be skipped and prove nothing.
    assert any(reason is None for reason in AVAILABLE.values()), AVAILABLE


def test_writes_outside_the_work_dir_fail(kind, work, tmp_path):
    box = Sandbox(work, isolation=kind, timeout_s=10)
    outside = [tmp_path / "escape", Path("/etc/tether-escape"), Path.cwd() / "tether-escape",
               Path.home() / "tether-escape"]
    script = "echo in > inside.txt; " + "; ".join(f"echo out > {p}" for p in outside)
    r = box.run_shell(script)
    assert (work / "inside.txt").read_text() == "in\n"
    for p in outside:
        assert not p.exists(), p
    # /etc and the repository are read-only mounts (the work dir's parent is in the private /tmp).
    assert "/etc/tether-escape: Read-only file system" in r.output
    if not str(Path.cwd()).startswith("/tmp/"):  # a checkout under /tmp is behind the private /tmp instead
        assert f"{Path.cwd()}/tether-escape: Read-only file system" in r.output


def test_cd_elsewhere_then_write_fails(kind, work):
    box = Sandbox(work, isolation=kind, timeout_s=10)
    r = box.run_shell("cd / && pwd && echo x > tether-escape; cd /usr && mkdir tether-escape; cd ~ && pwd")
    assert r.output.splitlines()[0] == "/"
    assert "tether-escape: Read-only file system" in r.output
    assert r.output.splitlines()[-1] == str(work)  # HOME is the work dir
    assert not Path("/tether-escape").exists() and not Path("/usr/tether-escape").exists()


def test_confinement_cannot_be_undone_from_inside(kind, work):
    # Capabilities are gone, and a nested namespace cannot remount the locked mounts.
    box = Sandbox(work, isolation=kind, timeout_s=10)
    r = box.run_shell("grep CapEff /proc/self/status; mount -o remount,rw / ; "
                      "unshare -Urm sh -c 'mount -o remount,rw / && echo x > /etc/tether-escape'; true")
    assert "CapEff:\t0000000000000000" in r.output
    assert not Path("/etc/tether-escape").exists()


def test_private_tmp_and_proc(kind, work, tmp_path):
    host_file = tmp_path / "host-only.txt"
    host_file.write_text("secret")
    box = Sandbox(work, isolation=kind, timeout_s=10)
    r = box.run_shell(f"cat {host_file}; echo scratch > /tmp/scratch && cat /tmp/scratch; "
                      f"ls /proc | grep -c '^[0-9]'; test -e /proc/{os.getpid()}/environ && echo LEAK")
    lines = r.output.splitlines()
    assert "No such file or directory" in lines[0]  # the host's /tmp is not visible
    assert lines[1] == "scratch" and not Path("/tmp/scratch").exists()
    assert int(lines[2]) < 10  # only the sandbox's own processes
    assert "LEAK" not in r.output


def test_environment_is_scrubbed(kind, work, monkeypatch):
    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    monkeypatch.setenv("TETHER_TEST_SHARED", "passed-through")
    box = Sandbox(work, isolation=kind, timeout_s=10, env_allowlist=["TETHER_TEST_SHARED"], env={"EXTRA": "1"})
    env = dict(line.split("=", 1) for line in box.run_shell("env").output.splitlines() if "=" in line)
    assert "TETHER_TEST_SECRET" not in env and "hunter2" not in str(env)
    assert env["TETHER_TEST_SHARED"] == "passed-through" and env["EXTRA"] == "1"
    assert env["HOME"] == str(work) and env["PATH"] == os.environ["PATH"]
    r = box.run_python("import os; print(os.environ.get('TETHER_TEST_SECRET'))")
    assert r.output == "None\n"
    assert box.environment()["HOME"] == str(work)


def test_no_network_unless_asked(kind, work):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('connected')"
        r = Sandbox(work, isolation=kind, timeout_s=10).run_python(code)
        assert "connected" not in r.output and r.exit_code == 1
        r = Sandbox(work, isolation=kind, timeout_s=10, network=True).run_python(code)
        assert r.output == "connected\n"


def test_timeout_is_a_ceiling(kind, work):
    box = Sandbox(work, isolation=kind, timeout_s=1)
    start = time.monotonic()
    r = box.run_shell("echo started; sleep 30", timeout_s=100)  # the model asks for more
    assert time.monotonic() - start < 3
    assert r.timed_out and r.timeout_s == 1 and r.to_text() == "started\n[timed out after 1s]"
    assert box.run_shell("sleep 0.1", timeout_s=0.05).timed_out  # shorter is fine
    assert box.clamp(100) == 1 and box.clamp(0.5) == 0.5 and box.clamp(None) == 1


def test_file_size_limit(kind, work):
    box = Sandbox(work, isolation=kind, timeout_s=10, limits=Limits(file_size_bytes=1 << 20))
    r = box.run_shell("head -c 3000000 /dev/zero > big; echo rc=$?")
    assert "rc=0" not in r.output
    assert (work / "big").stat().st_size <= 1 << 20
    r = box.run_python("open('big2', 'wb').write(b'x' * 3_000_000)")
    assert "File too large" in r.output and r.exit_code == 1


def test_cpu_and_memory_limits(kind, work):
    box = Sandbox(work, isolation=kind, timeout_s=20, limits=Limits(cpu_s=1, address_space_bytes=1 << 30))
    start = time.monotonic()
    r = box.run_shell("python3 -c 'while True: pass'; echo rc=$?")
    assert "rc=137" in r.output and time.monotonic() - start < 10  # killed for CPU time, not by the timeout
    r = box.run_python("b = bytearray(2 << 30)")
    assert "MemoryError" in r.output


def test_reports_its_isolation(kind, work):
    box = Sandbox(work, isolation=kind)
    info = box.describe()
    assert info["isolation"] == kind and info["workdir"] == str(work) and info["network"] is False
    assert "TETHER_TEST_SECRET" not in info["env"] and "HOME" in info["env"]
    assert info["limits"]["file_size_bytes"] == Limits().file_size_bytes
    assert box.run_shell("true").isolation == kind


def test_auto_picks_a_working_kind(work):
    if all(AVAILABLE.values()):
        pytest.skip("no isolation works here")
    box = Sandbox(work)
    expected = "bwrap" if AVAILABLE["bwrap"] is None else "unshare"
    assert box.isolation() == expected and box.run_shell("pwd").output == f"{work}\n"


def test_cwd_stays_inside_the_work_dir(work):
    box = Sandbox(work, allow_unconfined=True)
    (work / "sub").mkdir()
    assert box.run_shell("pwd", cwd="sub").output == f"{work}/sub\n"
    for bad in ("/", "..", "sub/../.."):
        with pytest.raises(ConfinementError, match="outside the tool's work dir"):
            box.run_shell("pwd", cwd=bad)


def test_temporary_work_dir(kind):
    box = Sandbox(isolation=kind)
    r = box.run_shell("pwd; echo x > f")
    assert r.output.startswith("/") and Path(box.workdir, "f").exists()
    assert Path(box.workdir).name.startswith("tether-tool-")


# -- refusing to run unconfined ------------------------------------------------------


@pytest.fixture
def nothing_confines(monkeypatch):
    """This machine as one without bubblewrap or user namespaces."""

    def probe(kind):
        return tool_runtime._Probe(False, None, False, f"{kind} not found on PATH")

    monkeypatch.setattr(tool_runtime, "_probe", probe)
    monkeypatch.delenv(tool_runtime.ALLOW_UNCONFINED_ENV, raising=False)


def test_unconfined_is_refused_unless_allowed(nothing_confines, work, monkeypatch):
    box = Sandbox(work)
    with pytest.raises(ConfinementError) as e:
        box.run_shell("echo ran > ran.txt")
    msg = str(e.value)
    assert "refusing to run the tool unconfined" in msg
    assert "apt-get install bubblewrap" in msg and "allow_unconfined=True" in msg
    assert "TETHER_ALLOW_UNCONFINED=1" in msg
    assert not (work / "ran.txt").exists()
    assert box.describe()["isolation"] == "refused"
    with pytest.raises(ConfinementError, match="'bwrap' does not work"):
        Sandbox(work, isolation="bwrap", allow_unconfined=True).isolation()
    with pytest.raises(ConfinementError, match="needs allow_unconfined"):
        Sandbox(work, isolation="none").isolation()

    monkeypatch.setenv("TETHER_TEST_SECRET", "hunter2")
    allowed = Sandbox(work, allow_unconfined=True, limits=Limits(file_size_bytes=1 << 20))
    r = allowed.run_shell("echo ran > ran.txt; env; head -c 3000000 /dev/zero > big")
    assert r.isolation == "none" and allowed.describe()["isolation"] == "none"
    assert (work / "ran.txt").exists()
    assert "hunter2" not in r.output  # still a scrubbed environment, and limits
    assert (work / "big").stat().st_size <= 1 << 20

    monkeypatch.setenv(tool_runtime.ALLOW_UNCONFINED_ENV, "1")
    assert Sandbox(work).isolation() == "none"
