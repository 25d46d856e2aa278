"""Talking to a running control plane's admin API, with one clear line (never a traceback) when that fails."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

__all__ = ["AdminClient", "CliError", "bearer_token"]


def bearer_token() -> str | None:
    """``$MESHCTL_TOKEN``, else the token of the kubeconfig's current user (``token`` or ``tokenFile``), as kubectl
    would send it; None if there is none (client certificates and exec plugins are not read here)."""
    if token := os.environ.get("MESHCTL_TOKEN"):
        return token.strip()
    path = Path((os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
    try:
        config = yaml.safe_load(path.read_text())
        context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        user = next(u.get("user") or {} for u in config["users"] if u["name"] == context["user"])
        if user.get("token"):
            return str(user["token"]).strip()
        if user.get("tokenFile"):
            return Path(user["tokenFile"]).read_text().strip()
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError, yaml.YAMLError):
        return None
    return None


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

    def get(self, endpoint: str, /, **query: str | None) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None}
        url = self.url + endpoint + (f"?{urllib.parse.urlencode(params)}" if params else "")
        return self._call(urllib.request.Request(url))

    def post(self, path: str, body: Any) -> dict[str, Any]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        return self._call(request)

    def _call(self, request: urllib.request.Request, *, retried: bool = False) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                data: dict[str, Any] = json.loads(resp.read())
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip() or exc.reason
            if exc.code == 401 and not retried and (token := bearer_token()):
                # Credentials go only to a server that asks for them (serve --admin-auth=kubernetes).
                request.add_header("Authorization", f"Bearer {token}")
                return self._call(request, retried=True)
            if exc.code in (401, 403):
                detail += " (MESHCTL_TOKEN, or the kubeconfig's token, is sent when the admin API asks for one)"
            raise CliError(detail, code=1 if exc.code == 404 else 2) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a URL urllib cannot use
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the control plane at {self.url}: {reason}") from None
