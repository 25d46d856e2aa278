"""Freed large blocks go back to the OS (meshctl.xds.malloc), shown in a fresh interpreter each way."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")

# Frees one 2 MiB block first (glibc then serves blocks up to 2 MiB from its heap), then 128 blocks of 1 MiB
# with a small block after them, so none is at the heap's top; prints the MiB given back when they are freed.
_PROGRAM = """
import os, sys
from meshctl.xds.malloc import return_large_blocks_to_the_os
if sys.argv[1] == "fixed":
    assert return_large_blocks_to_the_os()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
first = bytearray(2 << 20)
del first
blocks = [bytearray(1 << 20) for _ in range(128)]
pinned = bytearray(64 << 10)
before = rss()
del blocks
print((before - rss()) / 2**20)
"""


def _returned_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, check=True)
    return float(out.stdout)


def test_a_freed_large_block_is_returned_after_one_of_its_size_was_freed() -> None:
    assert _returned_mib("default") < 16  # the dynamic threshold kept them in the heap: what the fix is for
    assert _returned_mib("fixed") > 112
