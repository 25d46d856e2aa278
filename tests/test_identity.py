"""The mesh CA and the workload certificates it issues (issue 28): SPIFFE IDs, ECDSA P-256, 24 h by default,
backdated for clock skew, chained to the root; renewed at half their life with jitter; the CA kept on disk."""

from __future__ import annotations

import datetime
import random
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshctl.identity.ca import CLOCK_SKEW, MeshCA, renewal_time
from meshctl.identity.keeper import IdentityKeeper

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


def test_a_workload_certificate_names_its_identity_and_chains_to_the_root() -> None:
    ca = MeshCA.generate("shop.test")
    cert = ca.issue("shop", "reviews", now=NOW)
    leaf, intermediate = x509.load_pem_x509_certificates(cert.chain_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://shop.test/ns/shop/sa/reviews"]
    assert cert.spiffe_id == "spiffe://shop.test/ns/shop/sa/reviews"
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    assert leaf.not_valid_before_utc == NOW - CLOCK_SKEW  # backdated: a node whose clock is behind accepts it
    assert leaf.not_valid_after_utc == NOW + datetime.timedelta(hours=24)
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(ca.root)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert b"PRIVATE KEY" not in repr(cert).encode() and b"PRIVATE KEY" in cert.key_pem


def test_renewal_comes_at_half_life_with_jitter() -> None:
    cert = MeshCA.generate().issue("a", "b", now=NOW)
    rng = random.Random(7)
    fractions = [
        (renewal_time(cert, rng=rng) - cert.not_before) / (cert.not_after - cert.not_before) for _ in range(500)
    ]
    assert 0.45 <= min(fractions) < 0.47 and 0.53 < max(fractions) <= 0.55


def test_the_keeper_issues_once_and_renews_when_due() -> None:
    clock = [NOW]
    keeper = IdentityKeeper(MeshCA.generate(), lifetime=datetime.timedelta(minutes=2), clock=lambda: clock[0])
    first = keeper.certificate(("shop", "reviews"))
    assert keeper.certificate(("shop", "reviews")) is first and keeper.issued == 1
    assert keeper.renew_due() == []
    due_at = keeper.next_renewal()
    assert due_at is not None and NOW + datetime.timedelta(seconds=54) <= due_at <= NOW + datetime.timedelta(seconds=66)
    clock[0] = due_at
    assert keeper.renew_due() == [("shop", "reviews")]
    second = keeper.certificate(("shop", "reviews"))
    assert second.serial != first.serial
    keeper.forget(set())
    assert keeper.described() == []


def test_a_root_rotation_trusts_both_roots_then_signs_with_the_new_one() -> None:
    old, new = MeshCA.generate("t"), MeshCA.generate("t")
    keeper = IdentityKeeper(old)
    before = keeper.certificate(("a", "b"))
    middle = old.rotated(new)
    assert keeper.rotate_ca(middle) == [("a", "b")]
    after = keeper.certificate(("a", "b"))
    assert after.serial != before.serial
    roots = x509.load_pem_x509_certificates(middle.bundle_pem)
    assert {r.serial_number for r in roots} == {old.root.serial_number, new.root.serial_number}
    x509.load_pem_x509_certificates(after.chain_pem)[1].verify_directly_issued_by(new.root)


def test_the_ca_is_kept_on_disk_with_a_private_key_only_its_owner_reads(tmp_path) -> None:
    ca = MeshCA.load_or_create(tmp_path / "ca", "shop.test")
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    again = MeshCA.load_or_create(tmp_path / "ca")
    assert again.root == ca.root and again.trust_domain == "shop.test"
    leaf = x509.load_pem_x509_certificates(again.issue("a", "b").chain_pem)[0]
    leaf.verify_directly_issued_by(ca.intermediate)  # the loaded key signs
    (tmp_path / "ca" / "ca.key").write_text("not a key")
    with pytest.raises(ValueError, match="cannot load the mesh CA"):
        MeshCA.load(tmp_path / "ca")


def test_a_root_rotation_in_three_stages_on_disk(tmp_path) -> None:
    """trust (the next root joins the bundle, the old CA still signs), sign (the next CA signs, both trusted),
    finish (the old root leaves); the keeper follows the directory and re-issues when the signer changes."""
    from meshctl.identity.ca import rotate

    directory = tmp_path / "ca"
    old = MeshCA.load_or_create(directory, "t")
    keeper = IdentityKeeper(MeshCA.load(directory), ca_dir=directory)
    first = keeper.certificate(("a", "b"))
    assert not keeper.reload_ca()  # nothing changed

    rotate(directory, "trust")
    assert keeper.reload_ca()
    assert len(x509.load_pem_x509_certificates(keeper.ca.bundle_pem)) == 2
    assert keeper.certificate(("a", "b")) is first  # still signed by the old CA
    with pytest.raises(ValueError, match="under way"):
        rotate(directory, "trust")

    rotate(directory, "sign")
    assert keeper.reload_ca()
    second = keeper.certificate(("a", "b"))
    assert second.serial != first.serial and keeper.ca.root != old.root
    x509.load_pem_x509_certificates(second.chain_pem)[1].verify_directly_issued_by(keeper.ca.root)
    assert {r.serial_number for r in x509.load_pem_x509_certificates(keeper.ca.bundle_pem)} == {
        old.root.serial_number,
        keeper.ca.root.serial_number,
    }

    rotate(directory, "finish")
    assert keeper.reload_ca()
    assert [r.serial_number for r in x509.load_pem_x509_certificates(keeper.ca.bundle_pem)] == [
        keeper.ca.root.serial_number
    ]
    with pytest.raises(ValueError, match="no rotation under way"):
        rotate(directory, "sign")
