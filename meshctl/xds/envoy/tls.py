"""mTLS between sidecars: transport sockets for clusters and inbound listeners, and the SDS secrets they name.

Certificates and roots of the mesh CA are never inline in listeners or clusters: those name two SDS secrets
(``IDENTITY_SECRET``, ``TRUST_SECRET``) sent on the same ADS stream, so a renewal replaces one small resource and
Envoy swaps the context for new connections without touching listeners (existing connections keep theirs).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from meshctl.translate.ir import (
    IDENTITY_SECRET,
    SDS_AGENT_CLUSTER,
    TRUST_SECRET,
    DownstreamTlsIR,
    TlsSourcesIR,
    UpstreamTlsIR,
)
from meshctl.xds.envoy.common import ads_config_source, any_of

__all__ = [
    "FILE_SECRET_PREFIX",
    "downstream_transport_socket",
    "file_secrets",
    "gateway_transport_socket",
    "identity_secret",
    "trust_secret",
    "upstream_transport_socket",
]

# Secrets that only name files on the proxy's file system (App Mesh's ``file`` sources): no key material, so every
# stream may be sent them. Sent over SDS rather than inline in listeners and clusters because Envoy watches the
# files of an SDS secret (their directories) and reloads them when they change: cert-manager's csi-driver-spiffe
# rotates its certificates in place every hour.
FILE_SECRET_PREFIX = "file:"

_TLS = "envoy.transport_sockets.tls"
_URI = common_pb2.SubjectAltNameMatcher.URI
_DNS = common_pb2.SubjectAltNameMatcher.DNS


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    # Envoy's default initial fetch timeout (15 s) stays: a proxy that is sent no secret (it proved no identity)
    # must still finish starting; its mTLS clusters and listeners then refuse connections (secrets_not_ready).
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def _agent_sds(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret of the node's SDS agent (SPIRE's Workload API serves SDS on a Unix socket; App Mesh's ``sds``
    source): fetched over the bootstrap's static ``SDS_AGENT_CLUSTER`` (``meshctl bootstrap --sds-socket``)."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    api = source.api_config_source
    api.api_type = config_source_pb2.ApiConfigSource.GRPC
    api.transport_api_version = config_source_pb2.V3
    api.grpc_services.add().envoy_grpc.cluster_name = SDS_AGENT_CLUSTER
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def _common_context(common: common_pb2.CommonTlsContext, tls: TlsSourcesIR) -> common_pb2.CertificateValidationContext:
    """The certificate presented and the roots trusted, from the sources ``tls`` names (mesh SDS by default);
    returns the validation context the SAN matchers go into."""
    if tls.certificate_files is not None:
        common.tls_certificate_sds_secret_configs.append(_sds(_certificate_file_secret_name(*tls.certificate_files)))
    elif tls.certificate_sds is not None:
        common.tls_certificate_sds_secret_configs.append(_agent_sds(tls.certificate_sds))
    elif tls.present_certificate:
        common.tls_certificate_sds_secret_configs.append(_sds(IDENTITY_SECRET))
    combined = common.combined_validation_context
    if tls.trust_file is not None:
        source = _sds(_trust_file_secret_name(tls.trust_file))
    elif tls.trust_sds is not None:
        source = _agent_sds(tls.trust_sds)
    else:
        source = _sds(TRUST_SECRET)
    combined.validation_context_sds_secret_config.CopyFrom(source)
    return combined.default_validation_context


def upstream_transport_socket(tls: UpstreamTlsIR) -> base_pb2.TransportSocket:
    """Present the proxy's identity; accept only a peer the trusted roots signed, naming one of the client
    policy's ``subject_alt_names`` or else an identity of the callee's namespace
    (``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``)."""
    context = tls_pb2.UpstreamTlsContext()
    if tls.sni is not None:
        context.sni = tls.sni
    validation = _common_context(context.common_tls_context, tls)
    if tls.subject_alt_names:
        # A SPIFFE identity is a URI SAN; any other name (a host outside the mesh) a DNS SAN.
        validation.match_typed_subject_alt_names.extend(
            common_pb2.SubjectAltNameMatcher(
                san_type=_URI if name.startswith("spiffe://") else _DNS, matcher=string_pb2.StringMatcher(exact=name)
            )
            for name in tls.subject_alt_names
        )
    elif tls.sni is not None:
        validation.match_typed_subject_alt_names.add(san_type=_DNS, matcher=string_pb2.StringMatcher(exact=tls.sni))
    else:
        pattern = rf"spiffe://[^/]+/ns/{re.escape(tls.namespace)}/sa/[^/]+"
        matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))
        validation.match_typed_subject_alt_names.add(san_type=_URI, matcher=matcher)
    return base_pb2.TransportSocket(name=_TLS, typed_config=any_of(context))


def downstream_transport_socket(tls: DownstreamTlsIR, *, http: bool) -> base_pb2.TransportSocket:
    """Require a client certificate the trusted roots signed, naming an accepted identity."""
    context = tls_pb2.DownstreamTlsContext()
    context.require_client_certificate.value = True
    common = context.common_tls_context
    if http:
        common.alpn_protocols.extend(["h2", "http/1.1"])
    validation = _common_context(common, tls)
    matchers = (
        [string_pb2.StringMatcher(exact=name) for name in tls.subject_alt_names]
        if tls.subject_alt_names
        else [string_pb2.StringMatcher(prefix="spiffe://")]
    )
    validation.match_typed_subject_alt_names.extend(
        common_pb2.SubjectAltNameMatcher(san_type=_URI, matcher=m) for m in matchers
    )
    return base_pb2.TransportSocket(name=_TLS, typed_config=any_of(context))


def gateway_transport_socket(secret: str) -> base_pb2.TransportSocket:
    """An edge gateway's HTTPS: TLS terminated with the SDS secret ``secret`` (a certificate Secret's pair, sent on
    the gateway's own stream), no client certificate asked for; h2 or HTTP/1.1 by ALPN."""
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    common.alpn_protocols.extend(["h2", "http/1.1"])
    common.tls_certificate_sds_secret_configs.append(_sds(secret))
    return base_pb2.TransportSocket(name=_TLS, typed_config=any_of(context))


def _certificate_file_secret_name(chain: str, key: str) -> str:
    return f"{FILE_SECRET_PREFIX}{chain}|{key}"


def _trust_file_secret_name(path: str) -> str:
    return f"{FILE_SECRET_PREFIX}{path}"


def file_secrets(sources: Iterable[TlsSourcesIR]) -> list[secret_pb2.Secret]:
    """The SDS secrets naming the certificate and trust files of these TLS settings, one per distinct file set."""
    out: dict[str, secret_pb2.Secret] = {}
    for tls in sources:
        if tls.certificate_files is not None:
            name = _certificate_file_secret_name(*tls.certificate_files)
            secret = secret_pb2.Secret(name=name)
            secret.tls_certificate.certificate_chain.filename = tls.certificate_files[0]
            secret.tls_certificate.private_key.filename = tls.certificate_files[1]
            # Any move into the directory reloads both (Kubernetes volumes swap a ``..data`` symlink, which a
            # watch on the file names alone misses).
            secret.tls_certificate.watched_directory.path = posixpath.dirname(tls.certificate_files[0]) or "/"
            out[name] = secret
        if tls.trust_file is not None:
            name = _trust_file_secret_name(tls.trust_file)
            secret = secret_pb2.Secret(name=name)
            secret.validation_context.trusted_ca.filename = tls.trust_file
            secret.validation_context.watched_directory.path = posixpath.dirname(tls.trust_file) or "/"
            out[name] = secret
    return [out[name] for name in sorted(out)]


def identity_secret(chain_pem: bytes, key_pem: bytes, name: str = IDENTITY_SECRET) -> secret_pb2.Secret:
    """A key pair (the workload's identity, or an edge gateway's certificate Secret under its own name)."""
    secret = secret_pb2.Secret(name=name)
    secret.tls_certificate.certificate_chain.inline_bytes = chain_pem
    secret.tls_certificate.private_key.inline_bytes = key_pem
    return secret


def trust_secret(bundle_pem: bytes) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=TRUST_SECRET)
    secret.validation_context.trusted_ca.inline_bytes = bundle_pem
    return secret
