"""The CPU the engine runs on, and process settings that keep a CPU engine step from paying for page faults.

glibc hands large freed blocks (activations, gathered KV) back to the OS and
faults them in again on the next step: several times the cost of the copy
itself. Raising the mmap and trim thresholds keeps that memory in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(mmap_threshold: int = 32 * 2**20, trim_threshold: int = 2**30) -> bool:
    """Ask glibc to serve large allocations from the heap and not trim it; True if applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False  # not glibc (e.g. musl)
    _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _done


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_info() -> dict[str, object]:
    """What a CPU benchmark figure depends on: model name, ATen's vector ISA, threads.

    Example::

        cpu_info()   # {"cpu_model": "AMD EPYC 7763 ...", "cpu_capability": "AVX2", "torch_threads": 2}

    ``cpu_capability`` is ``torch.backends.cpu.get_cpu_capability()`` (``AVX512``, ``AVX2``, ...;
    ``ATEN_CPU_CAPABILITY=avx2`` lowers it on an AVX-512 machine).
    """
    return {"cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}
