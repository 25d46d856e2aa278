"""AuthorizationPolicy: who may call a VirtualNode's listeners (issue 29), shaped after the Gateway API's east-west
authorization proposal (GEP-3779) and Istio's AuthorizationPolicy.

A policy targets Services (the VirtualNodes their Routes send to) or VirtualNodes, optionally one listener port,
and ALLOWs or DENYs callers by the identity they proved over mTLS (service account, namespace, VirtualNode), and for
HTTP and gRPC by path, method and gRPC method. Evaluation, as Istio: a matching DENY denies; else, when any ALLOW
policy selects the target (or its namespace or the mesh defaults to deny), a matching ALLOW is needed; else allowed.
``mode: Audit`` counts and logs what the policy would deny without enforcing it (Envoy's shadow rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshctl.model.meta import FieldError, Meta, ObjectKey

__all__ = [
    "AUTHZ_LABEL",
    "AuthorizationPolicy",
    "AuthzAction",
    "AuthzDefault",
    "AuthzPolicySpec",
    "AuthzRule",
    "AuthzSource",
    "AuthzTarget",
    "PathMatch",
]

# The Namespace label that sets its default for listeners no ALLOW policy selects: allow | deny | audit
# (audit: would-be denials counted and logged, not enforced).
AUTHZ_LABEL = "mesh.meshctl.dev/authorization"


class AuthzAction(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


class AuthzDefault(StrEnum):
    """What happens to a call no ALLOW policy speaks for (a namespace's label, or the mesh's flag)."""

    ALLOW = "allow"
    DENY = "deny"
    AUDIT = "audit"  # deny in shadow: counted and logged, let through


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzTarget:
    kind: str  # Service | VirtualNode
    namespace: str
    name: str
    port: int | None = None  # a VirtualNode listener port; None: every listener


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzSource:
    """One kind of caller: exactly one field is set. ``declared_backends``: the VirtualNodes that declare the
    target's Service among their ``backends`` (App Mesh's backends as an allow-list)."""

    service_account: tuple[str, str] | None = None  # (namespace, name)
    namespace: str | None = None
    virtual_node: tuple[str, str] | None = None  # (namespace, name): the service accounts its pods run as
    declared_backends: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    type: str  # Exact | PathPrefix
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzRule:
    """Matches when a ``from`` source matches (none: any caller, even unauthenticated) and a ``to`` operation does
    (none: any request). An operation: any of its paths and any of its methods (each empty: any)."""

    sources: tuple[AuthzSource, ...] = ()
    paths: tuple[PathMatch, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzPolicySpec:
    targets: tuple[AuthzTarget, ...]
    action: AuthzAction = AuthzAction.ALLOW
    audit: bool = False
    rules: tuple[AuthzRule, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationPolicy:
    meta: Meta
    spec: AuthzPolicySpec | None
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[FieldError, ...] = ()
    # An invalid policy whose targets could still be read: they are denied (fail safe), never silently opened.
    targets_if_invalid: tuple[AuthzTarget, ...] = ()
    audit_if_invalid: bool = False

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("AuthorizationPolicy", self.meta.namespace, self.meta.name)
