"""The mesh's built-in CA: a root and an intermediate (ECDSA P-256), and the short-lived workload certificates the
intermediate signs.

A workload certificate carries one URI SAN, its SPIFFE ID ``spiffe://<trust domain>/ns/<namespace>/sa/<service
account>``, is usable for both ends of a connection, lives 24 h by default and starts two minutes in the past
(clock skew between nodes broke new pods in Istio until it backdated: istio#32176). Its chain is the leaf and the
intermediate; peers trust the root (the bundle may hold several roots while one replaces another).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_KEY_USAGE",
    "CLOCK_SKEW",
    "ROTATION_STAGES",
    "WORKLOAD_LIFETIME",
    "Issuer",
    "MeshCA",
    "WorkloadCertificate",
    "files_stamp",
    "pem_private_key",
    "renewal_time",
    "rotate",
    "spiffe_id",
]

WORKLOAD_LIFETIME = datetime.timedelta(hours=24)
CLOCK_SKEW = datetime.timedelta(minutes=2)
_ROOT_LIFETIME = datetime.timedelta(days=3650)
_INTERMEDIATE_LIFETIME = datetime.timedelta(days=365)


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def pem_private_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (it lives in a 0600 file, a Secret, or an SDS secret sent over mTLS)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# What a CA's key may do: sign certificates and CRLs (and, by convention, digital signatures).
CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    lifetime: datetime.timedelta,
    path_length: int,
    trust_domain: str,
) -> x509.Certificate:
    now = _now()
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl"), x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """A workload's key and certificate chain (leaf, then intermediate), PEM. ``repr`` leaves the key out."""

    spiffe_id: str
    chain_pem: bytes
    key_pem: bytes
    issued_at: datetime.datetime
    not_before: datetime.datetime  # backdated from issued_at by CLOCK_SKEW
    not_after: datetime.datetime
    serial: int

    def __repr__(self) -> str:
        return f"WorkloadCertificate({self.spiffe_id}, serial={self.serial:x}, not_after={self.not_after.isoformat()})"


class Issuer(Protocol):
    """What signs workload certificates: the built-in ``MeshCA``, or AWS Private CA (``acmpca.AcmPcaIssuer``)."""

    trust_domain: str
    description: str

    @property
    def bundle_pem(self) -> bytes: ...

    @property
    def signer_id(self) -> str: ...

    @property
    def trusted_root_ids(self) -> list[str]: ...

    def issue(
        self, namespace: str, service_account: str, *, lifetime: datetime.timedelta, now: datetime.datetime | None
    ) -> WorkloadCertificate: ...


class MeshCA:
    """A root and an intermediate; ``bundle_pem``: every root peers trust (more than one during a root rotation)."""

    description = "meshctl CA"

    def __init__(
        self,
        trust_domain: str,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        intermediate_key: ec.EllipticCurvePrivateKey,
        extra_roots: tuple[x509.Certificate, ...] = (),
    ) -> None:
        self.trust_domain = trust_domain
        self.root = root
        self.intermediate = intermediate
        self._key = intermediate_key
        self.extra_roots = extra_roots

    def __repr__(self) -> str:
        return f"MeshCA({self.trust_domain}, root serial {self.root.serial_number:x})"

    @classmethod
    def generate(cls, trust_domain: str = "meshctl.local") -> MeshCA:
        """A new root (its key is not kept: the intermediate signs, a new root means a new CA) and intermediate."""
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _ca_cert("meshctl root CA", root_key, None, root_key, _ROOT_LIFETIME, 1, trust_domain)
        key = ec.generate_private_key(ec.SECP256R1())
        intermediate = _ca_cert("meshctl intermediate CA", key, root, root_key, _INTERMEDIATE_LIFETIME, 0, trust_domain)
        return cls(trust_domain, root, intermediate, key)

    def rotated(self, new: MeshCA) -> MeshCA:
        """The root rotation's middle step: ``new`` signs, and peers trust both roots until the old one is dropped
        (bundle first, re-sign, then remove: an old root removed early cut Linkerd users off, linkerd#4287)."""
        return MeshCA(new.trust_domain, new.root, new.intermediate, new._key, (self.root, *self.extra_roots))

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(_pem(c) for c in (self.root, *self.extra_roots))

    @property
    def signer_id(self) -> str:
        return f"{self.intermediate.serial_number:x}"

    @property
    def trusted_root_ids(self) -> list[str]:
        return [f"{r.serial_number:x}" for r in (self.root, *self.extra_roots)]

    def issue(
        self,
        namespace: str,
        service_account: str,
        *,
        lifetime: datetime.timedelta = WORKLOAD_LIFETIME,
        now: datetime.datetime | None = None,
    ) -> WorkloadCertificate:
        """A fresh key and a certificate for the workload identity; never longer-lived than the intermediate."""
        identity = spiffe_id(self.trust_domain, namespace, service_account)
        key = ec.generate_private_key(ec.SECP256R1())
        issued = now or _now()
        start = issued - CLOCK_SKEW
        end = min(issued + lifetime, self.intermediate.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshctl")]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return WorkloadCertificate(
            spiffe_id=identity,
            chain_pem=_pem(cert) + _pem(self.intermediate),
            key_pem=pem_private_key(key),
            issued_at=issued,
            not_before=start,
            not_after=end,
            serial=cert.serial_number,
        )

    # --- persistence: the CA survives restarts (a new CA would re-issue every identity and break trust) --------

    def to_files(self) -> dict[str, bytes]:
        """``root.crt``, ``ca.crt`` (intermediate), ``ca.key``, ``bundle.crt`` and ``trust-domain``: what a CA
        directory or the CA Secret holds."""
        return {
            "root.crt": _pem(self.root),
            "ca.crt": _pem(self.intermediate),
            "bundle.crt": self.bundle_pem,
            "ca.key": pem_private_key(self._key),
            "trust-domain": (self.trust_domain + "\n").encode(),
        }

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], where: str) -> MeshCA:
        """Raises ValueError naming what is missing or unreadable (``where``: the directory or Secret)."""
        try:
            trust_domain = files["trust-domain"].decode().strip()
            root = x509.load_pem_x509_certificate(files["root.crt"])
            intermediate = x509.load_pem_x509_certificate(files["ca.crt"])
            key = serialization.load_pem_private_key(files["ca.key"], password=None)
            bundle = x509.load_pem_x509_certificates(files["bundle.crt"])
        except KeyError as exc:
            raise ValueError(f"cannot load the mesh CA from {where}: {exc.args[0]} is missing") from None
        except ValueError as exc:
            raise ValueError(f"cannot load the mesh CA from {where}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{where}: ca.key is not an ECDSA key")
        if key.public_key() != intermediate.public_key():  # (half-way through a rotation's writes, say)
            raise ValueError(f"{where}: ca.key is not the key of ca.crt")
        extra = tuple(c for c in bundle if c != root)
        return cls(trust_domain, root, intermediate, key, extra)

    def save(self, directory: Path) -> None:
        """The files of ``to_files``; ``ca.key`` readable by its owner only."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.to_files().items():
            path = directory / name
            if name == "ca.key":
                path.touch(mode=0o600, exist_ok=True)
                path.chmod(0o600)
            path.write_bytes(data)

    @classmethod
    def load(cls, directory: Path) -> MeshCA:
        """Raises ValueError naming the directory and what is missing or unreadable."""
        files = {}
        for name in ("trust-domain", "root.crt", "ca.crt", "ca.key", "bundle.crt"):
            try:
                files[name] = (directory / name).read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot load the mesh CA from {directory}: {exc}") from None
        return cls.from_files(files, str(directory))

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str = "meshctl.local") -> MeshCA:
        if (directory / "ca.key").exists():
            return cls.load(directory)
        ca = cls.generate(trust_domain)
        ca.save(directory)
        return ca


ROTATION_STAGES = ("trust", "sign", "finish")


def files_stamp(directory: Path) -> tuple[int, ...]:
    """What changes when the CA directory does (``meshctl ca rotate`` writes it): mtimes and sizes."""
    stamp: list[int] = []
    for name in ("root.crt", "ca.crt", "ca.key", "bundle.crt"):
        try:
            st = (directory / name).stat()
        except OSError:
            stamp += [-1, -1]
            continue
        stamp += [st.st_mtime_ns, st.st_size]
    return tuple(stamp)


def rotate(directory: Path, stage: str) -> str:
    """One step of a root rotation in a CA directory, each taken by the running control plane when it sees the
    files change: ``trust`` makes the next CA (in ``next/``) and adds its root to the bundle peers trust, while the
    current CA still signs; ``sign`` makes the next CA sign (every identity is issued again), both roots still
    trusted; ``finish`` drops the old root from the bundle. Waiting for every proxy between the steps is what makes
    it safe (an old root removed early cut Linkerd users off: linkerd#4287). Returns what it did; ValueError if the
    step does not follow."""
    current = MeshCA.load(directory)
    pending = directory / "next"
    if stage == "trust":
        if pending.exists():
            raise ValueError(f"a rotation is under way ({pending} exists): run the 'sign' stage next")
        new = MeshCA.generate(current.trust_domain)
        new.save(pending)
        _write_bundle(directory, (current.root, *current.extra_roots, new.root))
        return (
            f"new root {new.root.serial_number:x} trusted beside {current.root.serial_number:x}; the old CA still signs"
        )
    if stage == "sign":
        if not pending.exists():
            raise ValueError("no rotation under way: run the 'trust' stage first")
        new = MeshCA.load(pending)
        for name in ("root.crt", "ca.crt"):
            (directory / name).write_bytes((pending / name).read_bytes())
        (directory / "ca.key").write_bytes((pending / "ca.key").read_bytes())
        _write_bundle(directory, (new.root, current.root, *current.extra_roots))
        for leftover in pending.iterdir():
            leftover.unlink()
        pending.rmdir()
        return f"the CA of root {new.root.serial_number:x} signs now; both roots trusted"
    if stage == "finish":
        if pending.exists():
            raise ValueError("the next CA does not sign yet: run the 'sign' stage first")
        _write_bundle(directory, (current.root,))
        return f"only root {current.root.serial_number:x} is trusted now"
    raise ValueError(f"unknown stage {stage!r}: one of {', '.join(ROTATION_STAGES)}")


def _write_bundle(directory: Path, roots: tuple[x509.Certificate, ...]) -> None:
    seen: list[x509.Certificate] = []
    for root in roots:
        if root not in seen:
            seen.append(root)
    tmp = directory / "bundle.crt.tmp"
    tmp.write_bytes(b"".join(_pem(r) for r in seen))
    tmp.replace(directory / "bundle.crt")


def renewal_time(
    cert: WorkloadCertificate, *, ratio: float = 0.5, jitter: float = 0.1, rng: random.Random | None = None
) -> datetime.datetime:
    """When to issue the next certificate: at ``ratio`` ± ``jitter``/2 of the lifetime from issue (the backdating
    does not count: a 2-minute certificate backdated 2 minutes would be renewed at once). Istio renews at half-life
    ± 1 %; a wider spread keeps a thousand proxies issued together from renewing in the same second."""
    fraction = ratio + ((rng or random).random() - 0.5) * jitter
    return cert.issued_at + (cert.not_after - cert.issued_at) * fraction
