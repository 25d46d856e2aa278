"""A small aiohttp upstream for the demo and the tests: answers with its name, can fail or be slow.

``python -m meshctl.devtools.sample_app --port 18081 --name v1``
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Behavior", "build_app", "main", "serve_app", "start_app"]


@dataclass
class Behavior:
    """Mutable on purpose: tests flip it while traffic flows."""

    name: str
    fail_first: int = 0  # answer the first N requests with fail_status
    fail_status: int = 503
    fail_every: int = 0  # answer every Nth request with fail_status (2: half of them)
    stall_body: float = 0.0  # send the headers and part of the body, then stall this long (idle timeouts)
    delay: float = 0.0  # seconds before answering
    slow_first: int = 0  # only the first N requests are delayed (0: all of them)
    status: int = 200
    health_status: int = 200  # what GET /health answers (active health checks)
    seen: Counter[str] = field(default_factory=Counter)  # requests per path


def build_app(behavior: Behavior) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/health":
            return web.Response(status=behavior.health_status, text="health\n")
        behavior.seen[request.path] += 1
        total = sum(behavior.seen.values())
        if behavior.delay and (not behavior.slow_first or total <= behavior.slow_first):
            await asyncio.sleep(behavior.delay)
        if total <= behavior.fail_first or (behavior.fail_every and total % behavior.fail_every == 0):
            return web.Response(status=behavior.fail_status, text=f"{behavior.name} failing on purpose\n")
        if behavior.stall_body:
            response = web.StreamResponse(headers={"x-served-by": behavior.name})
            await response.prepare(request)
            await response.write(b"partial ")
            await asyncio.sleep(behavior.stall_body)
            await response.write(b"rest")
            return response
        headers = {"x-served-by": behavior.name}
        if request.path == "/whoami":  # who called, as the sidecar told it over mTLS (x-forwarded-client-cert)
            headers["x-client-cert"] = request.headers.get("x-forwarded-client-cert", "")
        return web.Response(status=behavior.status, text=behavior.name, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_app(behavior: Behavior, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    return await serve_app(build_app(behavior), port, host)


async def serve_app(app: web.Application, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """``app`` listening on host:port (no access log), until the returned runner is cleaned up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m meshctl.devtools.sample_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    web.run_app(build_app(Behavior(name=args.name)), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
