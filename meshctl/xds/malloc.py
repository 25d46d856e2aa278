"""Lets freed large blocks go back to the OS (glibc only; elsewhere nothing happens).

glibc serves a block of 128 KiB or more with its own mmap and unmaps it on free, but raises that threshold to
the size of each such block freed (up to 32 MiB). After the first 100,000-entry dict table (a model's Pod
namespace, an endpoint index) is freed, every later one comes from the heap, and a heap gives memory back only
from its top: a burst of 1,000 Pod changes, each model holding a new copy of the namespace, left 9-13 MiB more
resident at 10,000 services than with the threshold fixed (benchmark 7; 2-5 MiB with it). Fixing the threshold
costs an mmap and page faults per large block, which the build already pays for the first ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["return_large_blocks_to_the_os"]

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
_THRESHOLD = 128 * 1024  # glibc's default, kept fixed


def return_large_blocks_to_the_os() -> bool:
    """Fixes glibc's mmap threshold at its default; True if it took effect. Idempotent."""
    path = ctypes.util.find_library("c")
    if path is None:
        return False
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        log.debug("no mallopt in %s: large blocks stay with the allocator's defaults", path)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD))
