"""Every example runs as written, on the default model, and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, *args: str, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(400)
def test_hello_agent():
    assert run_example("hello_agent.py").strip()


@pytest.mark.timeout(400)
def test_tool_agent_lists_the_workdir():
    assert "note.txt" in run_example("tool_agent.py")


@pytest.mark.timeout(400)
def test_multi_agent_pipeline():
    out = run_example("multi_agent.py")
    for topic in ("tool calls:", "KV caches:", "job completion time:"):
        assert topic in out


@pytest.mark.timeout(400)
def test_openai_client_against_tether_serve():
    out = run_example("openai_client.py")
    assert "usage:" in out and "policy: tether" in out
    assert "policy: baseline" in run_example("openai_client.py", "--policy", "baseline")


@pytest.mark.timeout(400)
def test_tether_run_cli():
    proc = subprocess.run([sys.executable, "-m", "tether.cli", "run", "examples/hello_agent.py:hello", "--input",
                           "Say hi."], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()
    bad = subprocess.run([sys.executable, "-m", "tether.cli", "run", "examples/nope.py:x"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "FILE.py:agent" in bad.stderr
