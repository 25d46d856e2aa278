"""Drives a Controller through its public path, as the plane does: ``submit`` a model, and the ``run`` loop builds
it. ``apply`` returns once that model's build is done (the builds counter of its metrics moved)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from meshctl.controlplane.controller import Controller
from meshctl.model import Model
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import SnapshotCache
from tests.conftest import eventually


@contextlib.asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[Controller]:
    task = asyncio.create_task(controller.run())
    try:
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def apply(controller: Controller, model: Model, timeout: float = 30) -> None:
    """Submits ``model`` and waits until the run loop has built it (or failed to: a bug, counted)."""
    done = controller.metrics.builds + controller.metrics.build_errors
    await controller.submit(model)
    await eventually(
        lambda: controller.metrics.builds + controller.metrics.build_errors > done, timeout=timeout, interval=0.001
    )


@contextlib.asynccontextmanager
async def controller_for(
    params: Iterable[SidecarParams] = (), *, incremental: bool = True
) -> AsyncIterator[Controller]:
    """A running controller (1 ms hold-off, never doubled: tests submit one model per build) with these proxies' groups attached."""
    controller = Controller(SnapshotCache(), holdoff=0.001, max_holdoff=0.001, incremental=incremental)
    for p in params:
        await controller.attach(p)
    try:
        async with running(controller):
            yield controller
    finally:
        controller.close()
