"""Decode attention on the CPU without gathering K/V: a small C kernel (``csrc/paged_decode.c``).

The torch reference gathers each decode row's blocks into a padded copy and runs
SDPA over it: on a CPU, decode attention is memory-bound and that copy triples
the bytes moved (read, write, read back). The C kernel reads K/V in place from
the paged cache. It is compiled on first use with the system C compiler
(``cc -O3 -march=native -fopenmp``, about a second) into the tether cache
(``$TETHER_CACHE``, else ``~/.cache/tether``) and loaded with ctypes; with no
compiler, or ``TETHER_KERNELS=torch``, the reference serves every row.

Example::

    from tether.kernels import cpu_decode
    if cpu_decode.available(q, k_cache):
        out = cpu_decode.decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale)
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from tether.kernels.reference import prefill_one

log = logging.getLogger(__name__)
_SOURCE = Path(__file__).parent / "csrc" / "paged_decode.c"
# Reassociation lets the compiler vectorize the dot products (sums in another order: ~1e-7 apart).
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math",
          "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None | bool = None  # None: not tried yet; False: unavailable


def _build() -> ctypes.CDLL | bool:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not _SOURCE.exists():
        log.info("tether: no C compiler; decode attention uses the torch reference")
        return False
    src = _SOURCE.read_bytes()
    # -march=native: a build is only good for this CPU's instruction set (a shared home across an AVX-512
    # and an AVX2 node must not hand one the other's library), so the CPU's flags are part of the key.
    key = hashlib.sha256(src + " ".join([compiler, *_FLAGS, os.uname().machine, _cpu_flags()]).encode()).hexdigest()
    out_dir = Path(os.environ.get("TETHER_CACHE", Path.home() / ".cache" / "tether")) / "kernels"
    lib_path = out_dir / f"paged_decode-{key[:16]}.so"
    try:
        if not lib_path.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:  # build aside, then move: no half-written .so
                tmp_lib = Path(tmp) / lib_path.name
                subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(tmp_lib), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(tmp_lib, lib_path)
        lib = ctypes.CDLL(str(lib_path))
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", b"") or b""
        log.warning("tether: building the C decode kernel failed (%s %s); using the torch reference",
                    e, err.decode(errors="replace")[-500:])
        return False
    f = lib.paged_decode_f32
    f.restype = None
    f.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int] * 7 + [ctypes.c_float, ctypes.c_int]
    return lib


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _library() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _build()
    return _lib or None


def available(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """Can the C kernel serve decode rows of ``q`` over ``k_cache`` (fp32 CPU tensors, kernel built)?"""
    return (q.device.type == "cpu" and k_cache.device.type == "cpu" and k_cache.dtype == torch.float32
            and _library() is not None)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                     seq_lens: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of one query row per sequence ([B, H, D]) over its ``seq_lens[b]`` cached tokens."""
    lib = _library()
    assert lib is not None, "check available() first"
    B, H, D = q.shape
    num_blocks, block_size, kv_heads, head_dim = k_cache.shape
    if head_dim != D or H % kv_heads:
        raise ValueError(f"decode_attention: q {tuple(q.shape)} does not fit a cache of {kv_heads} x {head_dim}")
    qc = q.to(torch.float32).contiguous()
    tables = block_tables.to(torch.int32).contiguous()
    lens = seq_lens.to(torch.int32).contiguous()
    out = torch.empty_like(qc)
    max_len = int(lens.max()) if B else 0
    lib.paged_decode_f32(qc.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(), lens.data_ptr(),
                         out.data_ptr(), B, H, kv_heads, D, block_size, tables.shape[1], max_len, float(scale),
                         torch.get_num_threads())
    return out.to(q.dtype)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                    query_start_loc: torch.Tensor, seq_lens: torch.Tensor, scale: float) -> torch.Tensor:
    """``reference.paged_attention`` with its decode rows served by the C kernel (prefill chunks by the
    reference)."""
    qsl = query_start_loc.tolist()
    n_seqs = len(qsl) - 1
    if qsl[-1] == n_seqs:  # every sequence decodes one token: the common step
        return decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale)
    lens = seq_lens.tolist()
    out = torch.empty_like(q)
    decodes = [s for s in range(n_seqs) if qsl[s + 1] - qsl[s] == 1]
    if decodes:
        rows = [qsl[s] for s in decodes]
        out[rows] = decode_attention(q[rows], k_cache, v_cache, block_tables[decodes], seq_lens[decodes], scale)
    for s in range(n_seqs):
        if qsl[s + 1] - qsl[s] > 1:
            out[qsl[s]:qsl[s + 1]] = prefill_one(q[qsl[s]:qsl[s + 1]], k_cache, v_cache, block_tables[s], lens[s],
                                                 scale)
    return out
