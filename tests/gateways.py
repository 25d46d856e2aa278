"""Edge gateway Envoys for tests: a control plane serving xDS over mutual TLS, and gateway proxies whose client
certificate names their Gateway (``spiffe://.../ns/<ns>/gw/<name>``), the only proxies sent its certificate keys."""

from __future__ import annotations

import datetime
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import EnvoyProcess
from meshctl.inject.pki import KeyPair, issue, new_ca
from meshctl.xds.bootstrap import BootstrapOptions, render_bootstrap
from meshctl.xds.server.tls import XdsTls

XDS_NAME = "meshctl.meshctl-system.svc"


class GatewayXds:
    """The xDS CA, the control plane's serving pair and the client pairs of gateway proxies, as files in ``keys``."""

    def __init__(self, keys: Path) -> None:
        self.keys = keys
        self.ca: KeyPair = new_ca()
        serving = issue(self.ca, XDS_NAME, dns_names=(XDS_NAME,))
        (keys / "xds.crt").write_bytes(serving.cert_pem)
        (keys / "xds.key").write_bytes(serving.key_pem)
        (keys / "client-ca.crt").write_bytes(self.ca.cert_pem)

    def plane(self, manifests: Path, **kwargs: object) -> ControlPlane:
        tls = XdsTls(self.keys / "xds.crt", self.keys / "xds.key", self.keys / "client-ca.crt")
        return ControlPlane.from_manifests(manifests, xds_tls=tls, **kwargs)

    def envoy(self, xds_port: int, gateway: str, address: str, *, admin_port: int = 0) -> EnvoyProcess:
        """An Envoy serving ``gateway`` ("namespace/name") on ``address`` (a loopback address of its own)."""
        ns, name = gateway.split("/")
        options = self._options(f"gw/{name}", ns, node_id=f"{gateway}/gw-0", gateway=gateway, xds_port=xds_port)
        options = replace(options, admin_port=admin_port, bind_address=address)
        return EnvoyProcess(render_bootstrap(options), name=f"gateway-{ns}-{name}")

    def _options(self, claim: str, ns: str, **options: Any) -> BootstrapOptions:
        """A bootstrap streaming over mutual TLS with a client certificate naming ``ns`` and ``claim``
        (``gw/<name>`` or ``vn/<name>``): what the control plane lets stream as that Gateway or VirtualNode."""
        kind, name = claim.split("/")
        client = issue(self.ca, name[:60], uris=(f"spiffe://cluster.local/ns/{ns}/{claim}",), client=True)
        cert, key = self.keys / f"{kind}-{ns}-{name}.crt", self.keys / f"{kind}-{ns}-{name}.key"
        cert.write_bytes(client.cert_pem)
        key.write_bytes(client.key_pem)
        return BootstrapOptions(
            stats_port=None,
            admin_port=0,
            xds_ca_pem=self.ca.cert_pem.decode(),
            xds_server_name=XDS_NAME,
            xds_client_cert=str(cert),
            xds_client_key=str(key),
            **options,
        )

    def sidecar(
        self,
        xds_port: int,
        virtual_node: str,
        address: str,
        ingress_port: int,
        egress_port: int,
        *,
        admin_port: int = 0,
    ) -> EnvoyProcess:
        """A VirtualNode's sidecar whose first inbound listener binds ``address:ingress_port`` (a pod's IP; the port
        its EndpointSlice names, where capture would send callers), proving its VirtualNode on the xDS stream (so it
        gets its workload certificate)."""
        ns, name = virtual_node.split("/")
        options = self._options(
            f"vn/{name}",
            ns,
            node_id=f"{virtual_node}/pod-0",
            virtual_node=virtual_node,
            xds_port=xds_port,
            egress_port=egress_port,
            ingress_port=ingress_port,
            bind_address=address,
        )
        return EnvoyProcess(render_bootstrap(replace(options, admin_port=admin_port)), name=f"sidecar-{ns}-{name}")


def self_signed(names: list[str], common_name: str = "gateway-test") -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) for these DNS names and its key: what a kubernetes.io/tls Secret holds."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def tls_secret(namespace: str, name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"tls.crt": cert_pem.decode(), "tls.key": key_pem.decode()},
    }


def gateway_service(namespace: str, gateway: str, address: str, ports: tuple[int, ...] = (80,)) -> dict[str, object]:
    """The Service ``meshctl install --gateway`` makes for a Gateway, with the address its load balancer got (here a
    loopback address of the gateway's Envoy): what the Gateway's ``status.addresses`` report."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{gateway}-gateway", "namespace": namespace, "labels": {"meshctl.dev/gateway": gateway}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": f"port-{p}", "port": p} for p in ports]},
        "status": {"loadBalancer": {"ingress": [{"ip": address}]}},
    }
