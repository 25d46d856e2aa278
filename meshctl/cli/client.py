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
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"--admin {url!r}: expected a URL like http://127.0.0.1:19000")
        # A bare host:port (``--admin 127.0.0.1:19000``) means http, as kubectl's --server takes it.
        self.url = urllib.parse.urlunsplit(parts).rstrip("/")
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
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a URL urllib cannot use
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the control plane at {self.url}: {reason}") from None
