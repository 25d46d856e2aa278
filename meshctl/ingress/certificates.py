"""ACM certificate discovery, as LBC does it for an Ingress that names no ``certificate-arn``: the hosts of its TLS
section (else of its rules) each need an issued ACM certificate whose domain or alternative names cover them
(``*.example.com`` covers one label); the HTTPS listener gets them all.

ListCertificates (issued only) is read at most once a minute; each certificate's names (DescribeCertificate) once,
since they never change."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

__all__ = ["CertificateFinder", "covers"]

log = logging.getLogger(__name__)


def covers(name: str, host: str) -> bool:
    """Whether a certificate name covers ``host`` (a wildcard covers exactly one label, as TLS says)."""
    name, host = name.lower().rstrip("."), host.lower().rstrip(".")
    if name.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == name[2:]
    return name == host


class CertificateFinder:
    def __init__(self, acm: Any, ttl: float = 60.0) -> None:
        self.acm, self.ttl = acm, ttl
        self._names: dict[str, tuple[str, ...]] = {}  # ARN -> domain and alternative names
        self._issued: tuple[str, ...] = ()
        self._read_at = -float("inf")

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < self.ttl:
            return
        try:
            self._read()
        except (ClientError, BotoCoreError) as exc:  # keep what was read before; the hosts say what is missing
            log.warning("ACM certificate discovery: %s", exc)
            self._read_at = time.monotonic()  # not again before the next minute

    def _read(self) -> None:
        issued: list[str] = []
        for page in self.acm.get_paginator("list_certificates").paginate(CertificateStatuses=["ISSUED"]):
            issued.extend(c["CertificateArn"] for c in page["CertificateSummaryList"])
        for arn in issued:
            if arn not in self._names:
                described = self.acm.describe_certificate(CertificateArn=arn)["Certificate"]
                names = {described.get("DomainName", ""), *described.get("SubjectAlternativeNames", [])}
                self._names[arn] = tuple(sorted(n for n in names if n))
        self._issued = tuple(sorted(issued))
        self._read_at = time.monotonic()

    def for_hosts(self, hosts: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the certificates covering ``hosts``, the hosts none covers)."""
        self._refresh()
        found: set[str] = set()
        missing = []
        for host in sorted(set(hosts)):
            matched = [arn for arn in self._issued if any(covers(n, host) for n in self._names.get(arn, ()))]
            if matched:
                found.update(matched)
            else:
                missing.append(host)
        return tuple(sorted(found)), tuple(missing)
