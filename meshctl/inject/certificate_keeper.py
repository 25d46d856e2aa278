"""Self-managed certificates (no cert-manager): one Secret holds the controller's CA and its serving certificate
(used by the injection webhook and by xDS over TLS); every replica copies it into its TLS directory; the leader
renews the serving certificate at half its lifetime and keeps the webhook configuration's caBundle equal to the CA.

The first replica to start creates the Secret (a replica that loses the race reads the winner's). The CA lives ten
years (certs.CA_DAYS): sidecars' bootstraps carry it, so renewing it means restarting meshed pods (docs/install.md).
Synchronous (the ``kubernetes`` client): ``sync`` runs in a worker thread.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshctl.inject.pki import KeyPair, issue, needs_renewal, new_ca
from meshctl.inject.tlsfiles import TlsDir
from meshctl.kube.conflicts import unless_conflict

__all__ = ["CertificateKeeper", "default_dns_names"]

log = logging.getLogger(__name__)
_MERGE = "application/merge-patch+json"


def default_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    return (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


@dataclass
class CertificateKeeper:
    api: client.ApiClient
    namespace: str
    secret: str
    dns_names: tuple[str, ...]
    tls_dir: TlsDir
    webhook_config: str | None = None  # MutatingWebhookConfiguration whose caBundle is kept
    is_leader: Callable[[], bool] = lambda: True
    _version: str | None = None  # resourceVersion of the Secret as last read

    def sync(self) -> None:
        """Creates the Secret if missing; as leader, renews what needs it and patches the caBundle; always
        writes the Secret's current files into the TLS directory."""
        core: Any = client.CoreV1Api(self.api)  # called with plain dicts, read as raw JSON
        data = self._read(core)
        if data is None:
            data = self._create(core)
        elif self.is_leader() and self._stale(data):
            data = self._renew(core, data)
        self._write_files(data)
        if self.is_leader() and self.webhook_config:
            self._patch_ca_bundle(data["ca.crt"])

    # --- the Secret ------------------------------------------------------------------------------------------

    def _read(self, core: Any) -> dict[str, bytes] | None:
        try:
            secret = json.loads(core.read_namespaced_secret(self.secret, self.namespace, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        self._version = secret["metadata"].get("resourceVersion")
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def _issue(self, ca: KeyPair) -> dict[str, bytes]:
        leaf = issue(ca, self.dns_names[0], dns_names=self.dns_names)
        return {"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": ca.cert_pem, "ca.key": ca.key_pem}

    def _body(self, data: dict[str, bytes]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": self.secret,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "meshctl"},
            },
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }

    def _create(self, core: Any) -> dict[str, bytes]:
        data = self._issue(new_ca("meshctl"))
        if unless_conflict(lambda: core.create_namespaced_secret(self.namespace, self._body(data))):
            log.info("created the CA and serving certificate in Secret %s/%s", self.namespace, self.secret)
            return data
        found = self._read(core)  # another replica created it first
        assert found is not None
        return found

    def _ca(self, data: dict[str, bytes]) -> KeyPair | None:
        try:
            pair = KeyPair(data["ca.crt"], data["ca.key"])
            pair.cert  # noqa: B018 - parses it
            return pair
        except (KeyError, ValueError):
            return None

    def _stale(self, data: dict[str, bytes]) -> bool:
        ca = self._ca(data)
        leaf = data.get("tls.crt", b"")
        if ca is None or not data.get("tls.key") or needs_renewal(leaf) or needs_renewal(ca.cert_pem, ratio=0.9):
            return True
        cert = x509.load_pem_x509_certificate(leaf)
        if cert.issuer != ca.cert.subject:
            return True
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return True
        return set(names.get_values_for_type(x509.DNSName)) != set(self.dns_names)

    def _renew(self, core: Any, data: dict[str, bytes]) -> dict[str, bytes]:
        ca = self._ca(data)
        if ca is None or needs_renewal(ca.cert_pem, ratio=0.9):
            log.warning("Secret %s/%s: the CA is unreadable or near its end: a new CA", self.namespace, self.secret)
            ca = new_ca("meshctl")
        fresh = self._issue(ca)
        body = self._body(fresh)
        body["metadata"]["resourceVersion"] = self._version
        if not unless_conflict(lambda: core.replace_namespaced_secret(self.secret, self.namespace, body)):
            return self._read(core) or data  # someone else renewed it: theirs
        log.info("renewed the serving certificate in Secret %s/%s", self.namespace, self.secret)
        return fresh

    # --- files and caBundle ----------------------------------------------------------------------------------

    def _write_files(self, data: dict[str, bytes]) -> None:
        directory = self.tls_dir.directory
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("ca.crt", "tls.key", "tls.crt"):  # the certificate last: readers reload on its change
            path = directory / name
            if path.exists() and path.read_bytes() == data[name]:
                continue
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out:
                out.write(data[name])
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

    def _patch_ca_bundle(self, ca_pem: bytes) -> None:
        admission: Any = client.AdmissionregistrationV1Api(self.api)
        name = self.webhook_config
        try:
            config = json.loads(admission.read_mutating_webhook_configuration(name, _preload_content=False).data)
        except ApiException as exc:
            if exc.status == 404:
                log.warning("MutatingWebhookConfiguration %s not found: caBundle not set", name)
                return
            raise
        bundle = base64.b64encode(ca_pem).decode()
        webhooks = config.get("webhooks") or []
        if all(w.get("clientConfig", {}).get("caBundle") == bundle for w in webhooks):
            return
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = bundle
        body = {"metadata": {"resourceVersion": config["metadata"]["resourceVersion"]}, "webhooks": webhooks}
        admission.patch_mutating_webhook_configuration(name, body, _content_type=_MERGE)
        log.info("set the caBundle of MutatingWebhookConfiguration %s", self.webhook_config)
