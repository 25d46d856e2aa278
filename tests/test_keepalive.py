"""Dead and old proxy connections are closed (issue 9, unbounded state): a proxy that vanished without closing
its connection must not stay registered, holding its group's snapshot alive forever."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

from meshctl.controlplane.plane import ControlPlane
from meshctl.xds.envoy.types import CLUSTER
from meshctl.xds.server.ads import Keepalive
from tests.ads_client import AdsClient
from tests.conftest import eventually

EXAMPLES = Path(__file__).parent.parent / "examples" / "demo"


class FreezableRelay:
    """A TCP relay on loopback that can stop forwarding while keeping both connections open: to the server, the
    peer looks like a machine that dropped off the network (no FIN, no RST, no answers)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        self._tasks += [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while not self.frozen.is_set():
                data = await reader.read(65536)
                if not data or self.frozen.is_set():
                    break
                writer.write(data)
                await writer.drain()
        await asyncio.Event().wait() if self.frozen.is_set() else None  # frozen: hold the sockets open, silent

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def _plane(tmp_path: Path, keepalive: Keepalive) -> ControlPlane:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    plane = ControlPlane.from_manifests(tmp_path, keepalive=keepalive)
    await plane.start()
    await plane.wait_synced()
    return plane


async def test_a_proxy_that_went_silent_is_dropped_by_keepalive(tmp_path) -> None:
    plane = await _plane(tmp_path, Keepalive(time=0.3, timeout=0.5))
    relay = FreezableRelay(plane.xds_port)
    client = AdsClient(await relay.start(), "demo/frontend/p1", "demo/frontend")
    try:
        await client.send(CLUSTER)
        await client.recv()
        assert len(plane.registry.streams()) == 1 and plane.cache.get("demo/frontend") is not None
        relay.frozen.set()
        await eventually(lambda: not plane.registry.streams(), timeout=15)
        assert plane.xds_metrics.streams == 0
        assert plane.cache.get("demo/frontend") is None  # its group is no longer kept alive
    finally:
        await client.close()
        await relay.stop()
        await plane.stop()


async def test_connections_are_recycled_after_their_max_age(tmp_path) -> None:
    plane = await _plane(tmp_path, Keepalive(max_age=0.5, max_age_grace=0.5))
    client = AdsClient(plane.xds_port, "demo/frontend/p1", "demo/frontend")
    try:
        await client.send(CLUSTER)
        await client.recv()
        assert len(plane.registry.streams()) == 1
        await eventually(lambda: not plane.registry.streams(), timeout=15)
        # The proxy sees its stream end (and reconnects: Envoy does so at once). The server forgets the stream when
        # its handler ends, which can be a moment before the client has read the end: wait for it, do not assume.
        await eventually(lambda: client.call.done(), timeout=15)
    finally:
        await client.close()
        await plane.stop()
