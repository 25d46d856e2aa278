"""mTLS between sidecars: transport sockets for clusters and inbound listeners, and the SDS secrets they name.

Certificates and roots of the mesh CA are never inline in listeners or clusters: those name two SDS secrets
(``IDENTITY_SECRET``, ``TRUST_SECRET``) sent on the same ADS stream, so a renewal replaces one small resource and
Envoy swaps the context for new connections without touching listeners (existing connections keep theirs).
"""

from __future__ import annotations

import re

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from meshctl.translate.ir import IDENTITY_SECRET, SDS_AGENT_CLUSTER, TRUST_SECRET, DownstreamTlsIR, UpstreamTlsIR
from meshctl.xds.envoy.common import ads_config_source, any_of

__all__ = ["downstream_transport_socket", "identity_secret", "trust_secret", "upstream_transport_socket"]

_TLS = "envoy.transport_sockets.tls"
_URI = common_pb2.SubjectAltNameMatcher.URI


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


def _common_context(
    common: common_pb2.CommonTlsContext, tls: UpstreamTlsIR | DownstreamTlsIR
) -> common_pb2.CertificateValidationContext:
    """The certificate presented and the roots trusted, from the sources ``tls`` names (mesh SDS by default);
    returns the validation context the SAN matchers go into."""
    if tls.certificate_files is not None:
        chain, key = tls.certificate_files
        certificate = common.tls_certificates.add()
        certificate.certificate_chain.filename = chain
        certificate.private_key.filename = key
    elif tls.certificate_sds is not None:
        common.tls_certificate_sds_secret_configs.append(_agent_sds(tls.certificate_sds))
    else:
        common.tls_certificate_sds_secret_configs.append(_sds(IDENTITY_SECRET))
    if tls.trust_file is not None:
        validation = common.validation_context
        validation.trusted_ca.filename = tls.trust_file
        return validation
    combined = common.combined_validation_context
    source = _agent_sds(tls.trust_sds) if tls.trust_sds is not None else _sds(TRUST_SECRET)
    combined.validation_context_sds_secret_config.CopyFrom(source)
    return combined.default_validation_context


def upstream_transport_socket(tls: UpstreamTlsIR) -> base_pb2.TransportSocket:
    """Present the proxy's identity; accept only a peer the trusted roots signed, naming one of the client
    policy's ``subject_alt_names`` or else an identity of the callee's namespace
    (``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``)."""
    context = tls_pb2.UpstreamTlsContext()
    validation = _common_context(context.common_tls_context, tls)
    if tls.subject_alt_names:
        matchers = [string_pb2.StringMatcher(exact=name) for name in tls.subject_alt_names]
    else:
        pattern = rf"spiffe://[^/]+/ns/{re.escape(tls.namespace)}/sa/[^/]+"
        matchers = [string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))]
    validation.match_typed_subject_alt_names.extend(
        common_pb2.SubjectAltNameMatcher(san_type=_URI, matcher=m) for m in matchers
    )
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


def identity_secret(chain_pem: bytes, key_pem: bytes) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=IDENTITY_SECRET)
    secret.tls_certificate.certificate_chain.inline_bytes = chain_pem
    secret.tls_certificate.private_key.inline_bytes = key_pem
    return secret


def trust_secret(bundle_pem: bytes) -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=TRUST_SECRET)
    secret.validation_context.trusted_ca.inline_bytes = bundle_pem
    return secret
