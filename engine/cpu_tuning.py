"""Process settings that keep a CPU engine step from paying for page faults.

glibc hands large freed blocks (activations, gathered KV) back to the OS and
faults them in again on the next step: several times the cost of the copy
itself. Raising the mmap and trim thresholds keeps that memory in the heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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
