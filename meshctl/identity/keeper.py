"""The workload certificates in use, by identity (namespace, service account): issued on first use, renewed at a
fraction of their lifetime with jitter, swapped when the CA rotates.

The control plane makes the keys (Kuma's way, not Istio's in-pod agent): no process is added to each pod, and
a proxy receives its key only over an xDS stream that proved its identity. Keys live in this process's memory
only; a restart issues new ones (docs/security.md weighs this against an in-pod agent).
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from meshctl.identity.ca import WORKLOAD_LIFETIME, Issuer, MeshCA, WorkloadCertificate, files_stamp, renewal_time

__all__ = ["CaSource", "DirectorySource", "Identity", "IdentityKeeper"]

Identity = tuple[str, str]  # (namespace, service account)


class CaSource(Protocol):
    """Where the mesh CA is kept: ``changed`` gives its new contents when they changed (None otherwise), or raises
    ValueError for contents that cannot be used (yet)."""

    poll_interval: float

    def changed(self) -> MeshCA | None: ...


class DirectorySource:
    """A CA directory (``serve --ca-dir``), looked at every second."""

    poll_interval = 1.0

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp = files_stamp(directory)

    def changed(self) -> MeshCA | None:
        stamp = files_stamp(self.directory)
        if stamp == self._stamp:
            return None
        new = MeshCA.load(self.directory)
        self._stamp = stamp
        return new


log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class IdentityKeeper:
    def __init__(
        self,
        ca: Issuer,
        *,
        lifetime: datetime.timedelta = WORKLOAD_LIFETIME,
        clock: Callable[[], datetime.datetime] = _now,
        rng: random.Random | None = None,
        ca_dir: Path | None = None,
        ca_source: CaSource | None = None,
    ) -> None:
        """``ca_dir`` (or any ``ca_source``: the CA Secret in a cluster): where ``ca`` was loaded from;
        ``reload_ca`` follows it (``meshctl ca rotate``)."""
        self.ca = ca
        self.ca_source = ca_source or (DirectorySource(ca_dir) if ca_dir else None)
        self.lifetime = lifetime
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()  # builds run in a worker thread, renewals on the loop
        self._certs: dict[Identity, tuple[WorkloadCertificate, datetime.datetime]] = {}  # and when to renew it
        self.issued = 0

    def __repr__(self) -> str:
        return f"IdentityKeeper({self.ca!r}, {len(self._certs)} identities)"

    def certificate(self, identity: Identity) -> WorkloadCertificate:
        """The identity's current certificate, issued now if it has none (or its renewal time has passed)."""
        with self._lock:
            held = self._certs.get(identity)
            if held is not None and held[1] > self._clock():
                return held[0]
            return self._issue(identity)

    def _issue(self, identity: Identity) -> WorkloadCertificate:
        cert = self.ca.issue(*identity, lifetime=self.lifetime, now=self._clock())
        self._certs[identity] = (cert, renewal_time(cert, rng=self._rng))
        self.issued += 1
        return cert

    def next_renewal(self) -> datetime.datetime | None:
        with self._lock:
            return min((at for _, at in self._certs.values()), default=None)

    def renew_due(self) -> list[Identity]:
        """Issues a new certificate for every identity whose renewal time has passed; returns them."""
        now = self._clock()
        with self._lock:
            due = [identity for identity, (_, at) in self._certs.items() if at <= now]
            for identity in due:
                self._issue(identity)
        return due

    def rotate_ca(self, ca: Issuer) -> list[Identity]:
        """A new signing CA: every identity is issued again by it (the bundle should hold both roots by now)."""
        with self._lock:
            self.ca = ca
            identities = list(self._certs)
            for identity in identities:
                self._issue(identity)
        return identities

    def reload_ca(self) -> bool:
        """Takes the CA source's new contents, if it changed: a new signing CA issues every identity again; a
        new bundle only changes what peers trust. True when secrets must be sent again. A source caught half
        written (or broken) is left for the next look, the current CA kept."""
        if self.ca_source is None:
            return False
        try:
            new = self.ca_source.changed()
        except ValueError as exc:
            log.warning("mesh CA: %s; keeping the current one", exc)
            return False
        if new is None:
            return False
        if new.signer_id != self.ca.signer_id:
            log.info("mesh CA: a new CA signs (root %x); issuing every identity again", new.root.serial_number)
            self.rotate_ca(new)
        else:
            log.info("mesh CA: the trusted roots changed (%d now)", 1 + len(new.extra_roots))
            with self._lock:
                self.ca = new
        return True

    def forget(self, keep: set[Identity]) -> None:
        """Drops the keys of identities no proxy uses any more."""
        with self._lock:
            for identity in [i for i in self._certs if i not in keep]:
                del self._certs[identity]

    def described(self) -> list[dict[str, object]]:
        """For ``meshctl get identities``: no key material."""
        with self._lock:
            return [
                {
                    "namespace": ns,
                    "serviceAccount": sa,
                    "spiffeId": cert.spiffe_id,
                    "serial": f"{cert.serial:x}",
                    "notBefore": cert.not_before.isoformat(),
                    "notAfter": cert.not_after.isoformat(),
                    "renewAt": at.isoformat(),
                    "issuer": self.ca.description,
                }
                for (ns, sa), (cert, at) in sorted(self._certs.items())
            ]
