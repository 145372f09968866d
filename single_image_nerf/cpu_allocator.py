"""Keep freed memory inside the process when training on the CPU."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve every allocation from its heap and never hand freed memory back to the kernel.

    A CPU training step allocates and frees gigabytes in large tensors. By default each one above 32 MiB is a fresh
    mmap whose pages the kernel faults in and zeroes again at every step: a third of a coarse step's CPU time on a
    2-core machine went to that. With the heap kept, later steps reuse the same pages. The resident size stays at
    the peak of the first steps (which it reaches anyway). Returns whether the setting took (glibc only; elsewhere
    nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
