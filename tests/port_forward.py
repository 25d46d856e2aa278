"""A port-forward across network namespaces, as ``kubectl port-forward`` gives a laptop one port of a cluster: a
Unix socket (a file, seen from every network namespace) carries the connections. In the namespace, run
``python -m tests.port_forward LISTEN_PORT SOCKET``; outside, ``unix_to_tcp(SOCKET, port)`` forwards to a port on
this machine's loopback."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def _join(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    to_reader: asyncio.StreamReader,
    to_writer: asyncio.StreamWriter,
) -> None:
    await asyncio.gather(_pipe(reader, to_writer), _pipe(to_reader, writer))


@contextlib.asynccontextmanager
async def unix_to_tcp(path: str, port: int) -> AsyncIterator[None]:
    """Connections on the Unix socket ``path`` go to 127.0.0.1:``port`` (in this process's network namespace)."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        to_reader, to_writer = await asyncio.open_connection("127.0.0.1", port)
        await _join(reader, writer, to_reader, to_writer)

    server = await asyncio.start_unix_server(forward, path)
    try:
        yield
    finally:
        server.close()


async def _tcp_to_unix(listen_port: int, path: str) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        to_reader, to_writer = await asyncio.open_unix_connection(path)
        await _join(reader, writer, to_reader, to_writer)

    server = await asyncio.start_server(forward, "127.0.0.1", listen_port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_tcp_to_unix(int(sys.argv[1]), sys.argv[2]))
