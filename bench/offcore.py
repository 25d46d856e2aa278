"""Starts a benchmark's load process off core 0 before it imports anything: ``python -m bench.offcore MODULE ARGS``.

The control plane under test is pinned to core 0 (``common.pinned_to_first_core``) and its children inherit that.
A load process that moved itself in its ``__main__`` had already started its interpreter and imported grpc, the
Envoy protos or the ``kubernetes`` client there: 0.1-0.35 s of CPU on the measured core, as the first phase's
streams connect (adsload) or as the Pod burst begins (kubewrite). This module imports only ``os``, ``runpy`` and
``sys``; the move happens in the child itself, not in a ``preexec_fn`` (Python between fork and exec, which the
subprocess docs call unsafe with threads running: with gRPC's and the informers' threads the burst's writer now and
then exited non-zero with no traceback)."""

from __future__ import annotations

import os
import runpy
import sys


def command(module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m module args`` off core 0."""
    return [sys.executable, "-m", "bench.offcore", module, *args]


def on_other_cores() -> None:
    """Moves this process to every core but 0 (nothing on a 1-core machine)."""
    cores = set(range(1, os.cpu_count() or 1))
    if cores:
        os.sched_setaffinity(0, cores)


if __name__ == "__main__":
    on_other_cores()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
