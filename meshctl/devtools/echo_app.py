"""An HTTP echo backend that behaves like the Gateway API conformance suite's ``echo-basic``: it answers every
request with JSON describing what it received, so a test can check what the route's filters did.

Answer: ``{"path": <path with query>, "host", "method", "proto", "headers": {name: [values]}, "namespace", "pod",
"service"}``. ``X-Echo-Set-Header: Name:value,Name:value`` is copied into the response headers; ``/status/<code>``
answers with that status; ``?delay=<seconds>s`` waits first; ``/retry/...?uuid=U&succeedAfter=N[&responseCode=C]``
fails the first N requests of each ``uuid`` (answering C, or resetting the connection without one), then echoes.

``python -m meshctl.devtools.echo_app --port 18080 --pod echo-v1-0 --namespace demo``
"""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass, field

from aiohttp import web

from meshctl.devtools.sample_app import serve_app

__all__ = ["Echo", "build_echo_app", "start_echo"]


@dataclass
class Echo:
    pod: str
    namespace: str = "default"
    service: str = ""
    seen: list[str] = field(default_factory=list)  # the paths received (a mirror's copies land here too)
    attempts: dict[str, int] = field(default_factory=dict)  # /retry/: requests seen per uuid


def build_echo_app(echo: Echo) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        echo.seen.append(request.path_qs)
        delay = request.query.get("delay")
        if delay and (m := re.fullmatch(r"([0-9.]+)(ms|s)", delay)):
            await asyncio.sleep(float(m[1]) / (1000 if m[2] == "ms" else 1))
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.title(), []).append(value)
        response_headers = {}
        for item in request.headers.get("X-Echo-Set-Header", "").split(","):
            name, sep, value = item.partition(":")
            if sep and name.strip():
                response_headers[name.strip()] = value.strip()
        status = 200
        if request.path.startswith("/retry/") and (uuid := request.query.get("uuid")):
            seen = echo.attempts[uuid] = echo.attempts.get(uuid, 0) + 1
            succeed_after = request.query.get("succeedAfter", "0")
            if succeed_after.isdigit() and seen <= int(succeed_after):
                code = request.query.get("responseCode", "")
                if not code.isdigit():
                    assert request.transport is not None
                    request.transport.abort()  # a reset: what the suite's echo does without responseCode
                    raise ConnectionResetError("reset on purpose")
                return web.Response(status=int(code))
        if m := re.fullmatch(r"/status/([0-9]{3})", request.path):
            status = int(m[1])
        body = {
            "path": request.path_qs,
            "host": request.host,
            "method": request.method,
            "proto": f"HTTP/{request.version.major}.{request.version.minor}",
            "headers": headers,
            "namespace": echo.namespace,
            "pod": echo.pod,
            "service": echo.service,
        }
        return web.json_response(body, status=status, headers=response_headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_echo(echo: Echo, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    return await serve_app(build_echo_app(echo), port, host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--pod", required=True)
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args()
    web.run_app(build_echo_app(Echo(pod=args.pod, namespace=args.namespace)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
