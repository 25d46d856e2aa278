"""``kubernetes.io/tls`` Secrets -> the model (a Gateway HTTPS listener's certificate). Other Secrets are not read.

The key is decoded only to be handed to the gateway proxies that use it; every problem message names the field,
never its value.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from meshctl.model import Meta, Secret

__all__ = ["TLS_SECRET_TYPE", "tls_secret"]

TLS_SECRET_TYPE = "kubernetes.io/tls"
_FIELDS = (("tls.crt", "CERTIFICATE"), ("tls.key", "PRIVATE KEY"))


def tls_secret(meta: Meta, doc: dict[str, Any]) -> Secret | None:
    """The Secret when it is a TLS one (None otherwise), with ``problem`` set when its pair cannot be used."""
    if doc.get("type") != TLS_SECRET_TYPE:
        return None
    data: dict[str, Any] = doc["data"] if isinstance(doc.get("data"), dict) else {}
    strings: dict[str, Any] = doc["stringData"] if isinstance(doc.get("stringData"), dict) else {}
    values: list[bytes] = []
    for name, marker in _FIELDS:
        raw: bytes | None = None
        if isinstance(strings.get(name), str):
            raw = strings[name].encode()
        elif isinstance(data.get(name), str):
            try:
                raw = base64.b64decode(data[name], validate=True)
            except (binascii.Error, ValueError):
                return Secret(meta=meta, problem=f"data.{name} is not base64")
        if not raw:
            return Secret(meta=meta, problem=f"has no {name}")
        if b"-----BEGIN " not in raw or marker.encode() not in raw:
            return Secret(meta=meta, problem=f"{name} is not a PEM {marker.lower()}")
        values.append(raw)
    return Secret(meta=meta, certificate_pem=values[0], key_pem=values[1])
