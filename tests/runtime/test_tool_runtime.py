"""Built-in tool implementations: shell, Python, HTTP fetch."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tether.runtime.tool_runtime import http_fetch, run_python, run_shell, truncate_middle


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


# -- shell ----------------------------------------------------------------------


def test_shell_output_and_exit_code():
    r = run_shell("echo out; echo err >&2; exit 3")
    assert r.output == "out\nerr\n"
    assert r.exit_code == 3 and not r.timed_out
    assert r.to_text() == "out\nerr\n[exit code 3]"
    assert run_shell("true").to_text() == "[exit code 0]"


def test_shell_cwd(tmp_path):
    (tmp_path / "marker.txt").write_text("x")
    r = run_shell("pwd; ls", cwd=str(tmp_path))
    assert r.output.split() == [str(tmp_path), "marker.txt"]


def test_shell_stdin_is_closed():
    r = run_shell("cat; echo done", timeout_s=5)  # would hang if stdin were inherited
    assert r.output == "done\n" and r.exit_code == 0


def test_shell_timeout_kills_the_whole_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    # The subshell's sleep is a grandchild; bash waits on it.
    r = run_shell(f"echo started; (sleep 30 & echo $! > {pid_file}; wait); echo never", timeout_s=1)
    elapsed = time.monotonic() - start
    assert r.timed_out and r.exit_code is None
    assert elapsed < 3
    assert r.output == "started\n"
    assert r.to_text() == "started\n[timed out after 1s]"
    assert _wait_gone(int(pid_file.read_text()), within_s=2)


def test_shell_background_straggler_does_not_hold_the_call(tmp_path):
    pid_file = tmp_path / "bg.pid"
    start = time.monotonic()
    r = run_shell(f"sleep 30 & echo $! > {pid_file}; echo hi", timeout_s=20)
    assert time.monotonic() - start < 4  # ~1 s grace, not the 20 s limit
    assert r.exit_code == 0 and r.output == "hi\n"
    assert _wait_gone(int(pid_file.read_text()), within_s=2)


def test_truncation_keeps_head_and_tail():
    r = run_shell("seq 1 10000", max_output_chars=100)
    full = "".join(f"{i}\n" for i in range(1, 10001))
    omitted = len(full) - 100
    assert r.output.startswith(full[:50])
    assert r.output.endswith(full[-50:])
    assert f"\n... [truncated {omitted} chars] ...\n" in r.output
    assert r.output == truncate_middle(full, 100)
    assert truncate_middle("short", 100) == "short"


def test_huge_output_is_bounded():
    r = run_shell("yes | head -c 20000000", timeout_s=20, max_output_chars=1000)
    assert len(r.output) < 1100 and "[truncated 19999000 chars]" in r.output


# -- python ---------------------------------------------------------------------


def test_python_runs_in_a_fresh_interpreter():
    r = run_python("import sys; print(sys.executable); print(1/0)")
    assert r.output.startswith(sys.executable + "\n")
    assert "ZeroDivisionError" in r.output and r.exit_code == 1


def test_python_timeout_keeps_partial_output():
    start = time.monotonic()
    r = run_python("import time\nprint('before')\ntime.sleep(30)", timeout_s=1)
    assert time.monotonic() - start < 3
    assert r.timed_out and r.output == "before\n"


# -- http -------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/missing":
            self.send_error(404)
            return
        body = ("hello from " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server_url(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_fetch_ok_and_404(server_url):
    assert http_fetch(server_url + "/page") == "HTTP 200 OK\n\nhello from /page"
    assert http_fetch(server_url + "/missing").startswith("HTTP 404 Not Found")


def test_http_fetch_truncates(server_url):
    text = http_fetch(server_url + "/" + "a" * 200, max_output_chars=40)
    assert "[truncated" in text


def test_http_fetch_errors_are_strings():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    out = http_fetch(f"http://127.0.0.1:{port}/", timeout_s=5)
    assert out.startswith("error: ConnectError")
    assert http_fetch("file:///etc/passwd").startswith("error: only http")
