"""A real headless browser for the web view's tests: Debian's chromium (scripts/setup installs it), driven over the
Chrome DevTools Protocol with aiohttp's websocket client (no driver binary, nothing downloaded)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"


class Browser:
    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}", "--window-size=1400,900", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stderr is not None
        deadline = asyncio.get_running_loop().time() + 30
        while not self.port:
            remaining = deadline - asyncio.get_running_loop().time()
            line = await asyncio.wait_for(self.process.stderr.readline(), max(remaining, 0.1))
            if not line:
                raise RuntimeError("chromium exited before it listened")
            if m := re.search(rb"DevTools listening on ws://[^:]+:(\d+)/", line):
                self.port = int(m.group(1))
        asyncio.get_running_loop().create_task(self._drain())
        self._session = aiohttp.ClientSession()

    async def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while await self.process.stderr.readline():
            pass

    async def page(self, url: str) -> Page:
        assert self._session is not None
        async with self._session.put(f"http://127.0.0.1:{self.port}/json/new?{url}") as r:
            target = await r.json(content_type=None)
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        page = Page(ws)
        await page.call("Runtime.enable")
        return page

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.console: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads((await asyncio.wait_for(self.ws.receive(), 30)).data)
            if message.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(message["params"]["exceptionDetails"])[:500])
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
