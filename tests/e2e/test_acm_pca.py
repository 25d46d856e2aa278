"""Workload certificates from AWS Private CA (issue 28; App Mesh users' ``acm`` source): ``meshctl serve
--acm-pca-arn`` as users run it, a process with the standard AWS settings pointing at moto_server, issuing each
identity's certificate through IssueCertificate / GetCertificate, and sending it to the proxy that proved its
VirtualNode. The calls it makes are exactly what deploy/iam/identity-policy.json grants.

(moto ignores the validity asked for and issues at once: expiry and rotation timing are tested with the built-in
CA, tests/e2e/test_mtls.py.)"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import boto3
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

from meshctl.devtools.envoy_process import free_port
from meshctl.inject.pki import issue, new_ca, spiffe_identity
from meshctl.translate.ir import IDENTITY_SECRET, TRUST_SECRET
from meshctl.xds.envoy.types import SECRET
from tests.ads_client import AdsClient
from tests.conftest import eventually
from tests.e2e.test_workload_secrets import SERVER, _credentials, _mesh
from tests.least_privilege import check_iam, controller_aws_calls, read_recording, shipped_identity_policy


def _private_ca() -> tuple[str, x509.Certificate]:
    """An active root CA in moto, made as an operator would (CSR, self-issued root, import)."""
    pca = boto3.client("acm-pca")
    arn = pca.create_certificate_authority(
        CertificateAuthorityConfiguration={
            "KeyAlgorithm": "EC_prime256v1",
            "SigningAlgorithm": "SHA256WITHECDSA",
            "Subject": {"CommonName": "shop mesh CA"},
        },
        CertificateAuthorityType="ROOT",
    )["CertificateAuthorityArn"]
    csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
    root_arn = pca.issue_certificate(
        CertificateAuthorityArn=arn,
        Csr=csr.encode(),
        SigningAlgorithm="SHA256WITHECDSA",
        TemplateArn="arn:aws:acm-pca:::template/RootCACertificate/V1",
        Validity={"Type": "YEARS", "Value": 10},
    )["CertificateArn"]
    root = pca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=root_arn)["Certificate"]
    pca.import_certificate_authority_certificate(CertificateAuthorityArn=arn, Certificate=root.encode())
    return arn, x509.load_pem_x509_certificate(root.encode())


async def test_identities_come_from_aws_private_ca_with_exactly_the_policy_s_calls(moto, tmp_path: Path):
    arn, root = _private_ca()
    start = moto.recording.stat().st_size if moto.recording.exists() else 0
    ca, clients = new_ca(), new_ca("clients")
    pair = issue(ca, SERVER, dns_names=(SERVER,))
    for name, data in (("xds.crt", pair.cert_pem), ("xds.key", pair.key_pem), ("clients.crt", clients.cert_pem)):
        (tmp_path / name).write_bytes(data)
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    _mesh(mesh)
    xds, admin = free_port(), free_port()
    serve = [sys.executable, "-m", "meshctl", "serve", "--manifests", str(mesh), "--xds-port", str(xds)]
    serve += ["--admin-port", str(admin), "--acm-pca-arn", arn, "--trust-domain", "shop.test"]
    serve += ["--xds-tls-cert", str(tmp_path / "xds.crt"), "--xds-tls-key", str(tmp_path / "xds.key")]
    serve += ["--xds-tls-client-ca", str(tmp_path / "clients.crt")]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*serve, stdout=out, stderr=out)
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{admin}/readyz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout=30)
            client = issue(clients, "c", uris=(spiffe_identity("demo", "reviews-v1"),), client=True)
            ads = AdsClient(
                xds,
                "demo/reviews-v1/pod-0",
                "demo/reviews-v1",
                credentials=_credentials(ca, client),
                server_name=SERVER,
            )
            ads.node.metadata.fields["meshctl.service_account"].string_value = "reviews"
            await ads.send(SECRET, [IDENTITY_SECRET, TRUST_SECRET])
            resp = await ads.recv(timeout=30)
            secrets = {s.name: s for s in (Secret.FromString(r.value) for r in resp.resources)}
            chain = x509.load_pem_x509_certificates(
                secrets[IDENTITY_SECRET].tls_certificate.certificate_chain.inline_bytes
            )
            chain[0].verify_directly_issued_by(root)  # signed by the Private CA
            san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://shop.test/ns/demo/sa/reviews"]
            trusted = x509.load_pem_x509_certificates(secrets[TRUST_SECRET].validation_context.trusted_ca.inline_bytes)
            assert trusted == [root]
            async with session.get(f"http://127.0.0.1:{admin}/api/v1/identities") as r:
                body = await r.json()
            assert body["issuer"] == "AWS Private CA" and body["signer"] == arn
            assert [i["issuer"] for i in body["identities"]] == ["AWS Private CA"]
            # Its only proxy gone, the identity is forgotten: no key kept or renewed for nobody.
            await ads.close()

            async def forgotten() -> bool:
                async with session.get(f"http://127.0.0.1:{admin}/api/v1/identities") as r:
                    return (await r.json())["identities"] == []

            await eventually(forgotten, timeout=10)
    except BaseException:
        print(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        proc.terminate()
        await proc.wait()

    calls, _ = read_recording(moto.recording, start)
    verdict = check_iam(shipped_identity_policy(), controller_aws_calls(calls))
    assert verdict.ok, verdict.report()
    assert sorted({c.action for c in controller_aws_calls(calls)}) == [
        "acm-pca:GetCertificate",
        "acm-pca:GetCertificateAuthorityCertificate",
        "acm-pca:IssueCertificate",
    ]
    assert json.loads((Path(__file__).parents[2] / "deploy/iam/identity-policy.json").read_text())["Statement"]
