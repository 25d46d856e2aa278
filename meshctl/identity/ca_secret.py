"""The mesh CA kept in a Secret (``serve --ca-secret NAMESPACE/NAME``; ``deploy/`` uses meshctl-mesh-ca): every
replica signs with the same CA, and a restart keeps it. The first replica to start creates it (a replica that
loses the race reads the winner's). Replicas read it again every 10 s, so ``meshctl ca rotate --ca-secret`` (which
rewrites it: the same three stages as with a directory) reaches them all.

Keys are the CA directory's file names; a rotation's next CA is kept under ``next.<name>``."""

from __future__ import annotations

import base64
import logging
import tempfile
from pathlib import Path
from typing import Any

from kubernetes import client

from meshctl.identity.ca import MeshCA, rotate

__all__ = ["SecretSource", "rotate_secret"]

log = logging.getLogger(__name__)
_NEXT = "next."


def _version(obj: Any) -> str | None:
    return obj.metadata.resource_version if obj.metadata is not None else None


def _files(secret: Any) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


class SecretSource:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, *, poll_interval: float = 10.0) -> None:
        self.poll_interval = poll_interval
        self._core = client.CoreV1Api(api)
        self.namespace, self.name = namespace, name
        self._version: str | None = None

    @property
    def where(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def load_or_create(self, trust_domain: str) -> MeshCA:
        """Raises ValueError (an unusable Secret) or client.ApiException (the API server said no)."""
        try:
            secret = self._core.read_namespaced_secret(self.name, self.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ca = MeshCA.generate(trust_domain)
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=self.name, labels={"app.kubernetes.io/name": "meshctl"}),
                type="Opaque",
                data={k: base64.b64encode(v).decode() for k, v in ca.to_files().items()},
            )
            try:
                created = self._core.create_namespaced_secret(self.namespace, body)
            except client.ApiException as race:
                if race.status != 409:
                    raise
                secret = self._core.read_namespaced_secret(self.name, self.namespace)  # another replica's
            else:
                log.info("mesh CA: created %s (root %x)", self.where, ca.root.serial_number)
                self._version = _version(created)
                return ca
        self._version = _version(secret)
        return MeshCA.from_files(_files(secret), self.where)

    def changed(self) -> MeshCA | None:
        try:
            secret = self._core.read_namespaced_secret(self.name, self.namespace)
        except client.ApiException as exc:
            raise ValueError(f"cannot read {self.where} ({exc.status})") from None
        if _version(secret) == self._version:
            return None
        new = MeshCA.from_files(_files(secret), self.where)
        self._version = _version(secret)
        return new


def rotate_secret(api: client.ApiClient, namespace: str, name: str, stage: str) -> str:
    """``meshctl ca rotate --ca-secret``: the stage applied to the Secret's contents, written back (conflicting
    with a concurrent change: the API server's 409)."""
    core = client.CoreV1Api(api)
    secret = core.read_namespaced_secret(name, namespace)
    with tempfile.TemporaryDirectory(prefix="meshctl-ca-") as tmp:
        directory = Path(tmp)
        for key, data in _files(secret).items():
            path = directory / "next" / key.removeprefix(_NEXT) if key.startswith(_NEXT) else directory / key
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
        said = rotate(directory, stage)
        files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
        if (directory / "next").is_dir():
            files |= {_NEXT + p.name: p.read_bytes() for p in (directory / "next").iterdir()}
    secret.data = {k: base64.b64encode(v).decode() for k, v in files.items()}
    core.replace_namespaced_secret(name, namespace, secret)
    return said
