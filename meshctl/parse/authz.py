"""AuthorizationPolicy ``spec`` -> ``AuthzPolicySpec``, collecting field errors.

```yaml
spec:
  targetRefs: [{kind: Service, name: reviews}, {kind: VirtualNode, name: ledger, port: 5432}]
  action: ALLOW            # or DENY
  mode: Enforce            # or Audit: would-be denials counted and logged, not enforced
  rules:
    - from:
        - serviceAccount: {name: web}        # namespace: the policy's unless given
        - namespace: payments
        - virtualNode: {name: frontend}
        - declaredBackends: {}               # VirtualNodes that list the target's Service in their backends
      to:
        - paths: [{type: PathPrefix, value: /admin}]
          methods: [POST]
        - grpc: [{service: shop.Cart, method: Checkout}]
```
"""

from __future__ import annotations

import re
from typing import Any

from meshctl.model.authz import (
    AuthzAction,
    AuthzPolicySpec,
    AuthzRule,
    AuthzSource,
    AuthzTarget,
    PathMatch,
)
from meshctl.model.meta import FieldError
from meshctl.parse.fields import Fields, field_warnings

__all__ = ["parse_authorization_policy_spec", "policy_targets"]

_KINDS = ("Service", "VirtualNode")
_PATH_TYPES = ("Exact", "PathPrefix")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_GRPC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def policy_targets(spec: Any, namespace: str) -> tuple[AuthzTarget, ...]:
    """The targets of a policy, read on their own: an invalid policy still denies what it targets (fail safe)."""
    errors: list[FieldError] = []
    f = Fields(spec, "spec", errors)
    return tuple(t for tf in f.objects("targetRefs") if (t := _target(tf, namespace)) is not None)


def parse_authorization_policy_spec(
    spec: Any, namespace: str, warnings: list[FieldError] | None = None
) -> tuple[AuthzPolicySpec | None, list[FieldError]]:
    errors: list[FieldError] = []
    f = Fields(spec, "spec", errors)
    targets = tuple(t for tf in f.objects("targetRefs", required=True) if (t := _target(tf, namespace)) is not None)
    action = f.string("action", choices=tuple(a.value for a in AuthzAction)) or AuthzAction.ALLOW.value
    mode = f.string("mode", choices=("Enforce", "Audit")) or "Enforce"
    rules: list[AuthzRule] = []
    for rf in f.objects("rules"):
        sources = tuple(s for sf in rf.objects("from") if (s := _source(sf, namespace)) is not None)
        operations = list(rf.objects("to"))
        if not operations:
            rules.append(AuthzRule(sources=sources))
        for op in operations:
            paths, methods = _operation(op)
            rules.append(AuthzRule(sources=sources, paths=paths, methods=methods))
    if errors:
        return None, errors
    if warnings is not None:
        warnings.extend(field_warnings(f))
    return AuthzPolicySpec(targets=targets, action=AuthzAction(action), audit=mode == "Audit", rules=tuple(rules)), []


def _target(f: Fields, namespace: str) -> AuthzTarget | None:
    kind = f.string("kind", required=True, choices=_KINDS)
    f.string("group")  # "" (core) for a Service, mesh.meshctl.dev for a VirtualNode: the kind says which
    name = f.string("name", required=True)
    port = f.integer("port", minimum=1, maximum=65535)
    if kind is None or name is None:
        return None
    return AuthzTarget(kind=kind, namespace=namespace, name=name, port=port)


def _source(f: Fields, namespace: str) -> AuthzSource | None:
    present = [k for k in ("serviceAccount", "namespace", "virtualNode", "declaredBackends") if f.has(k)]
    if len(present) != 1:
        f.error("", "give exactly one of serviceAccount, namespace, virtualNode, declaredBackends")
        return None
    which = present[0]
    if which == "namespace":
        ns = f.string("namespace", required=True)
        if ns is not None and not _DNS_LABEL.fullmatch(ns):
            f.error("namespace", "must be a namespace name")
            return None
        return AuthzSource(namespace=ns) if ns else None
    if which == "declaredBackends":
        f.obj("declaredBackends")
        return AuthzSource(declared_backends=True)
    ref = f.obj(which, required=True)
    if ref is None:
        return None
    name = ref.string("name", required=True)
    ns = ref.string("namespace") or namespace
    if name is None:
        return None
    if which == "serviceAccount":
        return AuthzSource(service_account=(ns, name))
    return AuthzSource(virtual_node=(ns, name))


def _operation(f: Fields) -> tuple[tuple[PathMatch, ...], tuple[str, ...]]:
    paths = []
    for pf in f.objects("paths"):
        kind = pf.string("type", choices=_PATH_TYPES) or "PathPrefix"
        value = pf.string("value", required=True)
        if value is not None and not value.startswith("/"):
            pf.error("value", "must start with /")
        elif value is not None:
            paths.append(PathMatch(type=kind, value=value))
    for gf in f.objects("grpc"):
        service = gf.string("service", required=True)
        method = gf.string("method")
        for key, value in (("service", service), ("method", method)):
            if value is not None and not _GRPC_NAME.fullmatch(value):
                gf.error(key, f"{value!r} is not a gRPC name")
                service = None
        if service is not None:
            paths.append(
                PathMatch(type="Exact", value=f"/{service}/{method}")
                if method
                else PathMatch(type="PathPrefix", value=f"/{service}/")
            )
    methods = tuple(m.upper() for m in f.string_list("methods"))
    for m in methods:
        if m not in _METHODS:
            f.error("methods", f"{m!r} is not an HTTP method")
    return tuple(paths), methods
