"""AWS Private CA as the issuer of workload certificates (App Mesh users' ``acm`` source): the key is made here, a
CSR naming the SPIFFE ID goes to ``IssueCertificate``, the certificate comes back from ``GetCertificate``.

IAM: ``acm-pca:IssueCertificate``, ``acm-pca:GetCertificate`` and ``acm-pca:GetCertificateAuthorityCertificate`` on
the CA (deploy/iam/identity-policy.json). Each call is a network round trip: a thousand identities issued at once
take that many pairs (the keeper issues them in the build thread, off the serving loop). A short-lived CA
(``UsageMode=SHORT_LIVED_CERTIFICATE``, at most 7 days) suits 24 h certificates and costs less.
"""

from __future__ import annotations

import datetime
import math
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshctl.identity.ca import WorkloadCertificate, pem_private_key, spiffe_id

__all__ = ["AcmPcaIssuer"]


class AcmPcaIssuer:
    """An ``Issuer`` (see ``meshctl.identity.ca``) backed by one AWS Private CA."""

    description = "AWS Private CA"

    def __init__(self, client: Any, ca_arn: str, trust_domain: str, *, waiter_delay: float = 1.0) -> None:
        self._client = client
        self.ca_arn = ca_arn
        self.trust_domain = trust_domain
        self._waiter_delay = waiter_delay
        reply = client.get_certificate_authority_certificate(CertificateAuthorityArn=ca_arn)
        chain = reply["Certificate"] + "\n" + reply.get("CertificateChain", "")
        certs = x509.load_pem_x509_certificates(chain.encode())
        self._ca_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[:-1] if c != certs[-1])
        self._roots = [c for c in certs if c.issuer == c.subject] or certs[-1:]

    def __repr__(self) -> str:
        return f"AcmPcaIssuer({self.ca_arn})"

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(r.public_bytes(serialization.Encoding.PEM) for r in self._roots)

    @property
    def signer_id(self) -> str:
        return self.ca_arn

    @property
    def trusted_root_ids(self) -> list[str]:
        return [f"{r.serial_number:x}" for r in self._roots]

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        lifetime: datetime.timedelta,
        now: datetime.datetime | None = None,
    ) -> WorkloadCertificate:
        identity = spiffe_id(self.trust_domain, namespace, service_account)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl")]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .sign(key, hashes.SHA256())
        )
        issued = now or datetime.datetime.now(datetime.UTC)
        days = max(1, math.ceil(lifetime / datetime.timedelta(days=1)))  # the API's smallest relative unit
        arn = self._client.issue_certificate(
            CertificateAuthorityArn=self.ca_arn,
            Csr=csr.public_bytes(serialization.Encoding.PEM),
            SigningAlgorithm="SHA256WITHECDSA",
            Validity={"Type": "DAYS", "Value": days},
            IdempotencyToken=uuid.uuid4().hex[:36],
        )["CertificateArn"]
        self._client.get_waiter("certificate_issued").wait(
            CertificateAuthorityArn=self.ca_arn,
            CertificateArn=arn,
            WaiterConfig={"Delay": self._waiter_delay, "MaxAttempts": 60},
        )
        reply = self._client.get_certificate(CertificateAuthorityArn=self.ca_arn, CertificateArn=arn)
        leaf = x509.load_pem_x509_certificate(reply["Certificate"].encode())
        chain = leaf.public_bytes(serialization.Encoding.PEM) + (
            reply.get("CertificateChain", "").encode() or self._ca_chain
        )
        return WorkloadCertificate(
            spiffe_id=identity,
            chain_pem=chain,
            key_pem=pem_private_key(key),
            issued_at=issued,
            not_before=leaf.not_valid_before_utc,
            # Renewal follows the lifetime asked for, even if the CA granted more (whole days; moto: a year).
            not_after=min(leaf.not_valid_after_utc, issued + lifetime),
            serial=leaf.serial_number,
        )
