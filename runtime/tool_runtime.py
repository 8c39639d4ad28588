"""What the built-in tools run: shell commands, Python snippets, HTTP GETs.

Plain blocking functions with hard limits, so a tool can never hang its caller
or flood a prompt: every subprocess runs in its own process group and the whole
group is killed on timeout; output keeps its head and tail within a character
budget. Callers in async code run them in a thread.

Example::

    r = run_shell("ls -1 | head -3", cwd="/tmp", timeout_s=5)
    print(r.exit_code, r.output)
    print(r.to_text())   # what an LLM sees: output plus "[exit code 0]"

``run_shell``/``run_python`` run the command as this process would; the
built-in tools run theirs through a ``Sandbox``: a work directory of their own,
a scrubbed environment, rlimits, a timeout ceiling, and filesystem isolation
(bubblewrap, else user namespaces via ``unshare``). A ``Sandbox`` refuses to run
unconfined unless told so (``allow_unconfined=True`` or ``TETHER_ALLOW_UNCONFINED=1``)::

    box = Sandbox("/tmp/work", timeout_s=60)
    box.describe()["isolation"]                 # "bwrap"
    box.run_shell("echo hi > note; cat note").to_text()
"""

from __future__ import annotations

import atexit
import codecs
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import httpx

__all__ = [
    "ConfinementError", "Limits", "Sandbox", "ShellResult", "available_isolation", "http_fetch", "run_python",
    "run_shell", "truncate_middle",
]

DEFAULT_MAX_OUTPUT_CHARS = 10_000
# After killing a timed-out group, how long to keep reading what it already wrote.
_DRAIN_GRACE_S = 1.0
_POLL_S = 0.1


@dataclass(frozen=True)
class ShellResult:
    """The outcome of a subprocess.

    ``exit_code`` is ``None`` when the process was killed on timeout (then
    ``timed_out`` is true). ``output`` is stdout and stderr interleaved, truncated.
    """

    output: str
    exit_code: int | None
    timed_out: bool
    duration_s: float
    timeout_s: float
    # How the process was confined: "bwrap", "unshare", or "none" (see ``Sandbox``).
    isolation: str = "none"

    def to_text(self) -> str:
        """The result as an LLM should read it: output, then a status line."""
        if self.timed_out:
            status = f"[timed out after {self.timeout_s:g}s]"
        else:
            status = f"[exit code {self.exit_code}]"
        return f"{self.output.rstrip()}\n{status}" if self.output.strip() else status


def truncate_middle(text: str, max_chars: int) -> str:
    """Keep the first and last ``max_chars // 2`` characters, marking the cut.

    Both ends matter for tool output: the head has the command's context, the
    tail its errors and final state.
    """
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head
    return _join(text[:head], len(text) - max_chars, text[len(text) - tail :] if tail else "")


def _join(head: str, omitted: int, tail: str) -> str:
    return f"{head}\n... [truncated {omitted} chars] ...\n{tail}"


class _HeadTail:
    """Collects a stream in bounded memory: the first and last characters only.

    A command like ``yes`` writes gigabytes before its timeout; keeping all of
    it only to cut it later would exhaust memory.
    """

    def __init__(self, max_chars: int):
        self._head_max = max_chars // 2
        self._tail_max = max_chars - self._head_max
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self._total = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        self._total += len(text)
        room = self._head_max - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += len(text[:room])
            text = text[room:]
        if text and self._tail_max:
            self._tail = (self._tail + text)[-self._tail_max :]

    def text(self) -> str:
        self.feed(b"", final=True)
        head = "".join(self._head)
        omitted = self._total - len(head) - len(self._tail)
        if omitted <= 0:
            return head + self._tail
        return _join(head, omitted, self._tail)


def _run_process(
    argv: list[str],
    *,
    cwd: str | None,
    timeout_s: float,
    max_output_chars: int,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> ShellResult:
    start = time.monotonic()
    deadline = start + timeout_s
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        preexec_fn=preexec_fn,
        stdin=subprocess.DEVNULL,  # a command waiting for input gets EOF, not a hang
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: one killpg reaches every child
    )
    out = _HeadTail(max_output_chars)
    assert proc.stdout is not None
    with proc.stdout, selectors.DefaultSelector() as sel:
        fd = proc.stdout.fileno()
        sel.register(fd, selectors.EVENT_READ)
        # Read until EOF, i.e. until every process holding the pipe is gone, or
        # until the deadline; once the command itself has exited, background
        # children that hold the pipe get only a short grace.
        exited_at: float | None = None
        eof = False
        while not eof:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            limit = deadline if exited_at is None else min(deadline, exited_at + _DRAIN_GRACE_S)
            if now >= limit:
                break
            # Wake up now and then to notice the command exiting while a child holds the pipe.
            if sel.select(min(limit - now, _POLL_S)):
                data = os.read(fd, 65536)
                if data:
                    out.feed(data)
                else:
                    eof = True
        if eof:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # closed its stdout but kept running
                pass
        timed_out = proc.poll() is None
        if timed_out or not eof:
            # The timed-out command with all its children, or stragglers holding the pipe.
            _kill_group(proc.pid)
            grace_end = time.monotonic() + _DRAIN_GRACE_S
            while not eof and (left := grace_end - time.monotonic()) > 0 and sel.select(left):
                data = os.read(fd, 65536)  # keep what the group wrote before it died
                out.feed(data)
                eof = not data
            proc.wait()
    return ShellResult(
        output=out.text(),
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        timeout_s=timeout_s,
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def run_shell(
    command: str,
    cwd: str | None = None,
    timeout_s: float = 30.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> ShellResult:
    """Run ``command`` with ``bash -c``; kill it and all its children after ``timeout_s``.

    Background processes that keep the output pipe open are killed about a
    second after the command exits; redirect their output to keep them
    (``server > log 2>&1 &``).

    Example::

        run_shell("pytest -q", cwd=repo, timeout_s=120).to_text()
    """
    return _run_process(
        ["bash", "-c", command], cwd=cwd, timeout_s=timeout_s, max_output_chars=max_output_chars
    )


def run_python(
    code: str,
    timeout_s: float = 30.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    cwd: str | None = None,
) -> ShellResult:
    """Run ``code`` in a fresh interpreter (this one's ``sys.executable``).

    Example::

        run_python("print(sum(range(10)))").output   # "45\\n"
    """
    # -u: unbuffered, so a snippet killed on timeout still shows what it printed.
    return _run_process(
        [sys.executable, "-u", "-c", code],
        cwd=cwd,
        timeout_s=timeout_s,
        max_output_chars=max_output_chars,
    )


# -- confinement ------------------------------------------------------------------

ALLOW_UNCONFINED_ENV = "TETHER_ALLOW_UNCONFINED"
# Passed through from the parent's environment; everything else (tokens, keys) is dropped.
DEFAULT_ENV_ALLOWLIST = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
ISOLATION_KINDS = ("bwrap", "unshare", "none")
_INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap`, which `make setup` does), or let the tool run "
    f"unconfined with allow_unconfined=True or {ALLOW_UNCONFINED_ENV}=1"
)


class ConfinementError(RuntimeError):
    """A sandbox cannot give the isolation it was asked for (and may not run without it)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits set with ``setrlimit`` in the tool's process (inherited by its children).

    ``None`` leaves a limit as the parent has it; a limit is never raised above
    the parent's hard limit. Soft and hard are set alike, so the tool cannot lift them.

    - ``cpu_s``: CPU seconds per process (RLIMIT_CPU; then SIGKILL).
    - ``address_space_bytes``: virtual memory per process (RLIMIT_AS; allocations fail).
    - ``file_size_bytes``: the largest file a process may write (RLIMIT_FSIZE; EFBIG/SIGXFSZ).
    - ``processes``: processes of the user (RLIMIT_NPROC; the kernel does not apply it
      to root, so it binds only when the tools run as another user).
    - ``open_files``: file descriptors per process (RLIMIT_NOFILE).
    - ``tmp_bytes``: size of the sandbox's private ``/tmp`` (a tmpfs; not an rlimit).
    """

    cpu_s: int | None = 300
    address_space_bytes: int | None = 8 << 30
    file_size_bytes: int | None = 1 << 30
    processes: int | None = 1024
    open_files: int | None = 1024
    tmp_bytes: int | None = 256 << 20

    def rlimits(self) -> list[tuple[int, int]]:
        """``(resource, value)`` pairs to set, capped at this process's hard limits."""
        pairs = [
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_AS, self.address_space_bytes),
            (resource.RLIMIT_FSIZE, self.file_size_bytes),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_NOFILE, self.open_files),
        ]
        out = []
        for res, value in pairs:
            if value is None:
                continue
            if value <= 0:
                raise ValueError(f"resource limits must be positive, got {value}")
            hard = resource.getrlimit(res)[1]
            out.append((res, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        return out


def _set_rlimits(pairs: list[tuple[int, int]]) -> Callable[[], None]:
    """A ``preexec_fn``: runs in the forked child, before exec; only C calls, no imports or locks."""

    def apply() -> None:
        for res, value in pairs:
            resource.setrlimit(res, (value, value))

    return apply


def _allowed_by_env() -> bool:
    return os.environ.get(ALLOW_UNCONFINED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# The user-namespace fallback: run as PID 1 of fresh user, mount, PID, IPC, UTS
# (and network) namespaces made by ``unshare``; it remounts every mount read-only
# except the work dir, puts a private tmpfs on /tmp, drops all capabilities
# and execs the command. Mounts inherited into a user namespace are locked, so
# the command cannot undo this even from a nested namespace. Any failure exits
# 126 before the command runs: it never runs less confined than asked.
_UNSHARE_HELPER = r'''
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024, "nodiratime": 2048,
        "relatime": 1 << 21}

def mount(src, dst, fstype, flags, data):
    enc = lambda v: None if v is None else os.fsencode(v)
    if libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount %s: %s" % (dst, os.strerror(e)))

def inside(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")

def unescape(p):
    out, i = [], 0
    while i < len(p):
        if p[i] == "\\" and p[i + 1:i + 4].isdigit():
            out.append(chr(int(p[i + 1:i + 4], 8))); i += 4
        else:
            out.append(p[i]); i += 1
    return "".join(out)

def main():
    work, cwd, tmp_size, keep = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    keep = [] if keep == "-" else keep.split(os.pathsep)
    argv = sys.argv[6:]
    mount(work, work, None, MS_BIND | MS_REC, None)
    fd = os.open(work, os.O_PATH | os.O_DIRECTORY)
    keep_fds = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in keep]
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        point, opts = unescape(fields[4]), fields[5].split(",")
        if inside(point, work) or inside(point, "/proc"):
            continue
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for o in opts:
            flags |= OPTS.get(o, 0)
        try:
            mount(None, point, None, flags, None)
        except OSError as e:
            # Gone, or hidden under a later mount (then unreachable anyway).
            if e.errno not in (errno.ENOENT, errno.EINVAL, errno.EACCES):
                raise
    if tmp_size != "-":
        data = "mode=1777" + ("" if tmp_size == "0" else ",size=" + tmp_size)
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, data)
        if inside(work, "/tmp"):
            os.makedirs(work, exist_ok=True)
            mount("/proc/self/fd/%d" % fd, work, None, MS_BIND | MS_REC, None)
        for p, kfd in keep_fds:  # the interpreter itself may live under /tmp
            os.makedirs(p, exist_ok=True)
            mount("/proc/self/fd/%d" % kfd, p, None, MS_BIND | MS_REC, None)
    os.close(fd)
    for _, kfd in keep_fds:
        os.close(kfd)
    os.chdir(cwd)
    # No capabilities, now or after exec; no privilege gain through setuid binaries.
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last cap)
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    import signal  # Python ignores these, and ignored signals survive exec
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    os.execvp(argv[0], argv)

try:
    main()
except BaseException as e:
    sys.stderr.write("tether sandbox: cannot confine the command: %s\n" % (e,))
    sys.stderr.flush()
    os._exit(126)
'''


def _bwrap_argv(
    binary: str, argv: list[str], workdir: str, cwd: str, *, network: bool, tmp_bytes: int | None,
    private_tmp: bool, modern: bool,
) -> list[str]:
    # Everything read-only, the work dir read-write; fresh /dev and /proc (the
    # host's /proc would show other processes' environments).
    out = [binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if private_tmp:
        if modern and tmp_bytes:
            out += ["--size", str(tmp_bytes)]
        out += ["--tmpfs", "/tmp"]
        for path in _under_tmp(workdir):  # the interpreter itself may live under /tmp
            out += ["--ro-bind", path, path]
    out += ["--bind", workdir, workdir, "--chdir", cwd]
    out += ["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not network:
        out.append("--unshare-net")
    if modern:
        out.append("--disable-userns")  # bwrap >= 0.8: no nested namespaces
    # Run as root, bwrap would otherwise hand the command every capability.
    out += ["--cap-drop", "ALL", "--die-with-parent", "--", *argv]
    return out


def _unshare_argv(
    binary: str, argv: list[str], workdir: str, cwd: str, *, network: bool, tmp_bytes: int | None,
    private_tmp: bool, modern: bool,
) -> list[str]:
    out = [binary, "--user", "--map-root-user", "--mount", "--propagation", "private", "--pid", "--fork",
           "--kill-child", "--mount-proc", "--ipc", "--uts"]
    if not network:
        out.append("--net")
    tmp = str(tmp_bytes or 0) if private_tmp else "-"
    keep = os.pathsep.join(_under_tmp(workdir)) if private_tmp else ""
    return out + ["--", sys.executable, "-I", "-S", "-c", _UNSHARE_HELPER, workdir, cwd, tmp, keep or "-", "--",
                  *argv]


def _under_tmp(workdir: str) -> list[str]:
    """This interpreter's folders that a private /tmp would hide (a venv in a checkout under /tmp)."""
    dirs = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    dirs = {os.path.realpath(d) for d in dirs}
    keep = [d for d in sorted(dirs) if d.startswith("/tmp/") and not (d + "/").startswith(workdir.rstrip("/") + "/")]
    return [d for d in keep if not any(d != k and d.startswith(k + "/") for k in keep)]


_WRAPPERS = {"bwrap": _bwrap_argv, "unshare": _unshare_argv}


@dataclass(frozen=True)
class _Probe:
    ok: bool
    binary: str | None
    modern: bool  # bwrap: --size and --disable-userns work
    reason: str


_probe_lock = threading.Lock()
_workdir_lock = threading.Lock()
_probes: dict[tuple[str, str | None], _Probe] = {}


def _probe(kind: str) -> _Probe:
    """Whether ``kind`` confines here: a write inside a test work dir must succeed and one
    beside it must fail. Cached per process (and per binary found on PATH)."""
    binary = shutil.which(kind)
    key = (kind, binary)
    with _probe_lock:
        if key in _probes:
            return _probes[key]
        if binary is None:
            result = _Probe(False, None, False, f"{kind} not found on PATH")
        else:
            result = _Probe(False, binary, False, "")
            reasons = []
            for modern in ((True, False) if kind == "bwrap" else (False,)):
                ok, reason = _try_confinement(kind, binary, modern)
                if ok:
                    result = _Probe(True, binary, modern, "")
                    break
                reasons.append(reason)
            else:
                result = _Probe(False, binary, False, "; ".join(dict.fromkeys(reasons)))
        _probes[key] = result
        return result


def _try_confinement(kind: str, binary: str, modern: bool) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="tether-probe-") as root:
        work = os.path.join(root, "work")
        os.mkdir(work)
        # Judged from here: inside the sandbox the write beside may land in its private /tmp.
        script = f'echo ok > "{work}/inside" && {{ echo no > "{root}/outside"; }} 2>/dev/null; exit 0'
        argv = _WRAPPERS[kind](binary, ["/bin/sh", "-c", script], work, work, network=False,
                               tmp_bytes=1 << 20, private_tmp=True, modern=modern)
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": work}
        try:
            proc = subprocess.run(argv, env=env, cwd=work, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=20, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"{kind}: {type(e).__name__}: {e}"
        confined = (proc.returncode == 0 and os.path.exists(os.path.join(work, "inside"))
                    and not os.path.exists(os.path.join(root, "outside")))
        if confined:
            return True, ""
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        return False, f"{kind}: exit {proc.returncode}" + (f" ({detail[-1]})" if detail else "")


def available_isolation() -> dict[str, str | None]:
    """Each isolation kind this machine offers: ``None`` if it works, else why not."""
    return {kind: (None if (p := _probe(kind)).ok else p.reason) for kind in ("bwrap", "unshare")}


class Sandbox:
    """Where and how a tool's commands run: confined to ``workdir``, limited, with a clean environment.

    - Work dir: ``workdir`` (created if missing; ``None``: a fresh temporary
      directory per process, made on first use, removed at exit). Commands start there, and it
      is the only host path they can write: the rest of the filesystem is
      read-only, ``/tmp`` is a private tmpfs (``private_tmp``), ``/proc`` shows
      only the sandbox's own processes.
    - Environment: only the names in ``DEFAULT_ENV_ALLOWLIST`` plus
      ``env_allowlist`` are copied from this process's environment; ``HOME`` is
      the work dir; ``env`` adds or overrides values.
    - Limits: ``limits`` (``Limits()`` defaults), set with ``setrlimit`` in the child.
    - Time: ``timeout_s`` is a ceiling; a longer timeout asked per call is lowered to it.
    - Isolation (``isolation="auto"``): bubblewrap (``bwrap``) if it works, else
      user namespaces through ``unshare``; both also cut the network unless
      ``network=True``. With neither, a call raises ``ConfinementError`` unless
      ``allow_unconfined`` (default: the ``TETHER_ALLOW_UNCONFINED`` environment
      variable) is true; then only the isolation is missing. ``isolation`` may
      also name one kind ("bwrap", "unshare"), or "none" (needs ``allow_unconfined``).

    ``describe()`` reports what a call gets; every result carries its ``isolation``.
    Picklable: a copy sent to another process probes that process's machine.

    Example::

        box = Sandbox(repo, timeout_s=120, env_allowlist=["GIT_AUTHOR_NAME"], limits=Limits(cpu_s=60))
        box.run_shell("pytest -q", timeout_s=600).timeout_s   # 120: the ceiling
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        timeout_s: float = 30.0,
        isolation: str = "auto",
        allow_unconfined: bool | None = None,
        env_allowlist: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        network: bool = False,
        private_tmp: bool = True,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if isolation not in ("auto", *ISOLATION_KINDS):
            raise ValueError(f"isolation must be 'auto' or one of {ISOLATION_KINDS}, got {isolation!r}")
        if isinstance(env_allowlist, str):
            raise TypeError("env_allowlist is a list of names, not a string")
        self._workdir = None if workdir is None else os.path.realpath(os.fspath(workdir))
        self.timeout_s = float(timeout_s)
        self.requested_isolation = isolation
        self.allow_unconfined = _allowed_by_env() if allow_unconfined is None else bool(allow_unconfined)
        self.env_allowlist = tuple(dict.fromkeys([*DEFAULT_ENV_ALLOWLIST, *env_allowlist]))
        self.env = dict(env or {})
        self.limits = limits if limits is not None else Limits()
        self.limits.rlimits()  # validate now rather than in the child
        self.network = network
        self.private_tmp = private_tmp
        self.max_output_chars = max_output_chars

    # -- configuration ----------------------------------------------------------

    @property
    def workdir(self) -> str:
        """The work dir, created if missing."""
        with _workdir_lock:  # concurrent first calls (tools run in threads) share one
            if self._workdir is None:
                self._workdir = os.path.realpath(tempfile.mkdtemp(prefix="tether-tool-"))
                atexit.register(shutil.rmtree, self._workdir, ignore_errors=True)
        os.makedirs(self._workdir, exist_ok=True)
        return self._workdir

    def isolation(self) -> str:
        """The isolation a call gets here: "bwrap", "unshare" or "none".

        Raises ``ConfinementError`` when the one asked for does not work, or when
        only "none" is left and running unconfined is not allowed.
        """
        return self._resolve()[0]

    def _resolve(self) -> tuple[str, _Probe | None]:
        wanted = self.requested_isolation
        if wanted == "none":
            if not self.allow_unconfined:
                raise ConfinementError(
                    f"isolation='none' runs tools unconfined, which needs allow_unconfined=True or "
                    f"{ALLOW_UNCONFINED_ENV}=1"
                )
            return "none", None
        kinds = ("bwrap", "unshare") if wanted == "auto" else (wanted,)
        reasons = []
        for kind in kinds:
            probe = _probe(kind)
            if probe.ok:
                return kind, probe
            reasons.append(probe.reason)
        why = "; ".join(reasons)
        if wanted != "auto":
            raise ConfinementError(f"isolation {wanted!r} does not work on this machine ({why})")
        if self.allow_unconfined:
            return "none", None
        raise ConfinementError(
            f"refusing to run the tool unconfined: neither bubblewrap nor user namespaces work on this "
            f"machine ({why}); to confine it, {_INSTALL_HINT}"
        )

    def environment(self) -> dict[str, str]:
        """The environment a command sees."""
        env = {name: os.environ[name] for name in self.env_allowlist if name in os.environ}
        env.setdefault("PATH", os.defpath)
        env["HOME"] = self.workdir
        env.update(self.env)
        return env

    def clamp(self, timeout_s: float | None) -> float:
        """The limit a call gets: ``timeout_s`` (default: the ceiling), never above the ceiling."""
        if timeout_s is None or not timeout_s > 0:
            return self.timeout_s
        return min(float(timeout_s), self.timeout_s)

    def describe(self) -> dict[str, Any]:
        """What a call gets, as a dict (``isolation`` is "refused" with an ``error`` when it may not run)."""
        info: dict[str, Any] = {
            "workdir": self._workdir,
            "timeout_s": self.timeout_s,
            "network": self.network,
            "private_tmp": self.private_tmp,
            "env": sorted(self.env_allowlist + tuple(self.env) + ("HOME",)),
            "limits": asdict(self.limits),
            "allow_unconfined": self.allow_unconfined,
        }
        try:
            kind, _ = self._resolve()
        except ConfinementError as e:
            info.update(isolation="refused", error=str(e))
            return info
        info["isolation"] = kind
        if kind == "none":  # no namespaces: the host network, filesystem and /tmp
            info.update(network=True, private_tmp=False, filesystem="unconfined")
        else:
            info["filesystem"] = "work dir read-write, the rest read-only"
        if os.geteuid() == 0 and self.limits.processes is not None:
            info["process_limit_note"] = "RLIMIT_NPROC does not bind processes of root"
        return info

    # -- running --------------------------------------------------------------

    def _cwd(self, cwd: str | None) -> str:
        workdir = self.workdir
        if cwd is None:
            return workdir
        path = os.path.realpath(os.path.join(workdir, cwd))
        if not _inside(path, workdir):
            raise ConfinementError(f"cwd {cwd!r} is outside the tool's work dir {workdir}")
        if not os.path.isdir(path):
            raise ConfinementError(f"cwd {cwd!r} is not a directory in the tool's work dir {workdir}")
        return path

    def run(self, argv: list[str], timeout_s: float | None = None, cwd: str | None = None) -> ShellResult:
        """Run ``argv`` confined; ``cwd`` is relative to the work dir (and must stay inside it)."""
        kind, probe = self._resolve()
        workdir = self.workdir
        start_dir = self._cwd(cwd)
        if kind != "none":
            assert probe is not None and probe.binary is not None
            argv = _WRAPPERS[kind](
                probe.binary, argv, workdir, start_dir, network=self.network, tmp_bytes=self.limits.tmp_bytes,
                private_tmp=self.private_tmp, modern=probe.modern,
            )
        result = _run_process(
            argv, cwd=start_dir, timeout_s=self.clamp(timeout_s), max_output_chars=self.max_output_chars,
            env=self.environment(), preexec_fn=_set_rlimits(self.limits.rlimits()),
        )
        return replace(result, isolation=kind)

    def run_shell(self, command: str, timeout_s: float | None = None, cwd: str | None = None) -> ShellResult:
        """``bash -c command`` in the sandbox (see ``run_shell``)."""
        return self.run(["bash", "-c", command], timeout_s, cwd)

    def run_python(self, code: str, timeout_s: float | None = None, cwd: str | None = None) -> ShellResult:
        """``code`` in a fresh interpreter (this one's ``sys.executable``) in the sandbox."""
        return self.run([sys.executable, "-u", "-c", code], timeout_s, cwd)

    def __repr__(self) -> str:
        return (f"Sandbox(workdir={self._workdir!r}, timeout_s={self.timeout_s:g}, "
                f"isolation={self.requested_isolation!r}, network={self.network})")


_TEXT_TYPES = ("text/", "json", "xml", "javascript", "yaml", "csv")


def http_fetch(
    url: str,
    timeout_s: float = 20.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    max_bytes: int = 2_000_000,
) -> str:
    """GET ``url``; return the status line and the body as text. Never raises.

    Reads at most ``max_bytes`` of the body; failures come back as ``"error: ..."``.

    Example::

        http_fetch("https://example.com")   # "HTTP 200 OK\\n\\n<!doctype html>..."
    """
    if not url.startswith(("http://", "https://")):
        return f"error: only http:// and https:// URLs can be fetched, got {url!r}"
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
            with client.stream("GET", url) as response:
                body = bytearray()
                cut = False
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        del body[max_bytes:]
                        cut = True
                        break
                status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
                content_type = response.headers.get("content-type", "")
                encoding = response.encoding or "utf-8"
    except Exception as e:  # the caller wants text either way
        return f"error: {type(e).__name__}: {e}"
    if content_type and not any(t in content_type for t in _TEXT_TYPES):
        return f"{status}\n\n[{content_type} body, {len(body)} bytes, not shown]"
    try:
        text = bytes(body).decode(encoding, errors="replace")
    except LookupError:  # the server named an encoding Python does not know
        text = bytes(body).decode("utf-8", errors="replace")
    if cut:
        text += f"\n[body cut at {max_bytes} bytes]"
    return f"{status}\n\n{truncate_middle(text, max_output_chars)}"
