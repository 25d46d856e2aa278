"""Talking to a running control plane's admin API, with one clear line (never a traceback) when that fails."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["AdminClient", "CliError"]


class CliError(Exception):
    """A problem the user can fix (bad input, unreachable server): main prints ``meshctl: <message>`` and exits
    with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    def __init__(self, url: str, timeout: float = 10) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, path: str, **query: str | None) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(params)}" if params else "")
        return self._call(urllib.request.Request(url))

    def post(self, path: str, body: Any) -> dict[str, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        return self._call(request)

    def _call(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip() or exc.reason
            raise CliError(detail, code=1 if exc.code == 404 else 2) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the control plane at {self.url}: {reason}") from None
