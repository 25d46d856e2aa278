"""Run inside a test-made network namespace (``python -m tests.capture_tool ...``): an app that knows nothing of
Envoy, calling addresses, and plain TCP servers. Prints JSON."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import ssl
import urllib.error
import urllib.request


async def http(url: str, host: str, n: int) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()

    def one() -> str:
        request = urllib.request.Request(url, headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return str(resp.read().decode())
        except urllib.error.HTTPError as exc:
            return str(exc.code)

    for _ in range(n):
        counts[await asyncio.to_thread(one)] += 1
    return dict(counts)


async def tcp(host: str, port: int, n: int) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            writer.write(b"ping")
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(1024), 10)
            writer.close()
            counts[reply.decode().split(":")[0] or "closed"] += 1
        except (OSError, TimeoutError) as exc:
            counts[type(exc).__name__] += 1
    return dict(counts)


async def tls_ping(host: str, port: int, sni: str, n: int) -> dict[str, int]:
    """``n`` TLS connections naming ``sni`` (the server is not checked: what is judged is where they get)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=sni), 10
            )
            writer.write(b"ping")
            await writer.drain()
            reply = await asyncio.wait_for(reader.read(1024), 10)
            writer.close()
            counts[reply.decode().split(":")[0] or "closed"] += 1
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            counts[type(exc).__name__] += 1
    return dict(counts)


async def tls_echo(host: str, port: int, name: str, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(f"{name}:".encode() + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port, ssl=context)
    async with server:
        await server.serve_forever()


async def echo(host: str, port: int, name: str) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(f"{name}:".encode() + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def peek(url: str, host: str, cert: str | None, key: str | None, method: str = "GET") -> dict[str, object]:
    """One request; with ``cert``, over TLS presenting that client certificate (the server's is not checked:
    this is the client whose certificate is being judged). An error is reported by its class, never raised."""
    context = None
    if cert:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(cert, key)
    request = urllib.request.Request(url, headers={"Host": host}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return {
                "status": resp.status,
                "body": resp.read().decode(),
                "client_cert": resp.headers.get("x-client-cert"),
            }
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read().decode(errors="replace")}
    except (OSError, ssl.SSLError) as exc:
        return {"error": type(exc).__name__}


async def load(url: str, host: str, rate: int, seconds: float) -> dict[str, int]:
    """``rate`` requests a second for ``seconds`` (bounded: rate x seconds requests), each on its own schedule so a
    slow answer does not lower the rate; counts statuses and errors by kind."""
    import time

    import aiohttp

    counts: collections.Counter[str] = collections.Counter()
    total, interval = int(rate * seconds), 1 / rate
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:

        async def one() -> None:
            try:
                async with session.get(url, headers={"Host": host}) as resp:
                    await resp.read()
                    counts[str(resp.status)] += 1
            except Exception as exc:  # counted by kind: the test asserts there are none
                counts[type(exc).__name__] += 1

        started = time.monotonic()
        tasks = []
        for i in range(total):
            delay = started + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    h = sub.add_parser("http")
    h.add_argument("url")
    h.add_argument("host")
    h.add_argument("n", type=int)
    t = sub.add_parser("tcp")
    t.add_argument("host")
    t.add_argument("port", type=int)
    t.add_argument("n", type=int)
    e = sub.add_parser("echo")
    e.add_argument("host")
    e.add_argument("port", type=int)
    e.add_argument("name")
    tp = sub.add_parser("tlsping")
    tp.add_argument("host")
    tp.add_argument("port", type=int)
    tp.add_argument("sni")
    tp.add_argument("n", type=int)
    te = sub.add_parser("tlsecho")
    te.add_argument("host")
    te.add_argument("port", type=int)
    te.add_argument("name")
    te.add_argument("cert")
    te.add_argument("key")
    g = sub.add_parser("get")
    g.add_argument("url")
    lo = sub.add_parser("load")
    lo.add_argument("url")
    lo.add_argument("host")
    lo.add_argument("rate", type=int)
    lo.add_argument("seconds", type=float)
    p = sub.add_parser("peek")
    p.add_argument("url")
    p.add_argument("host")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--method", default="GET")
    args = parser.parse_args()
    if args.what == "http":
        print(json.dumps(asyncio.run(http(args.url, args.host, args.n))))
    elif args.what == "tcp":
        print(json.dumps(asyncio.run(tcp(args.host, args.port, args.n))))
    elif args.what == "echo":
        asyncio.run(echo(args.host, args.port, args.name))
    elif args.what == "tlsping":
        print(json.dumps(asyncio.run(tls_ping(args.host, args.port, args.sni, args.n))))
    elif args.what == "tlsecho":
        asyncio.run(tls_echo(args.host, args.port, args.name, args.cert, args.key))
    elif args.what == "load":
        print(json.dumps(asyncio.run(load(args.url, args.host, args.rate, args.seconds))))
    elif args.what == "peek":
        print(json.dumps(peek(args.url, args.host, args.cert, args.key, args.method)))
    else:
        try:
            with urllib.request.urlopen(args.url, timeout=5) as resp:
                print(resp.read().decode())
        except OSError as exc:
            print(json.dumps({"error": str(exc)}))
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
