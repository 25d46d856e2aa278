"""AuthorizationPolicies -> what each VirtualNode listener enforces (``AuthzIR``), and each policy's status. Pure.

Callers are named by the identity they proved over mTLS: a service account is
``spiffe://<trust domain>/ns/<namespace>/sa/<name>`` (any trust domain: only the trusted roots' certificates get
this far); a namespace, any service account in it; a VirtualNode, the service accounts its pods run as;
``declaredBackends``, those of the VirtualNodes that list a Service reaching the listener among their backends.
A plaintext caller (PERMISSIVE) proves nothing: only rules without ``from`` match it.

Fail safe: a policy that cannot be read but whose targets can becomes a DENY of everything on them (in Audit mode
if it asked for that), so a broken policy meant to restrict a target never leaves it open.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from meshctl.model import Model, ObjectKey, VirtualNodeSpec
from meshctl.model.authz import (
    AuthorizationPolicy,
    AuthzAction,
    AuthzDefault,
    AuthzRule,
    AuthzSource,
    AuthzTarget,
)
from meshctl.model.namespaced import names_in
from meshctl.translate.endpoints import cluster_listener
from meshctl.translate.ir import (
    AuthzIR,
    AuthzPolicyIR,
    AuthzRuleIR,
    Condition,
    ConditionStatus,
    ObjectStatus,
    RouteIR,
)

__all__ = ["Decision", "ListenerKey", "authz_dependencies", "decide", "service_accounts", "translate_authz"]

ListenerKey = tuple[ObjectKey, int]  # (VirtualNode, listener port)
_ANY_SA = "[^/]+"


@dataclass(frozen=True, slots=True)
class _Resolved:
    listeners: tuple[ListenerKey, ...]
    missing: tuple[str, ...]  # targets not found


def authz_dependencies(policies: Mapping[ObjectKey, AuthorizationPolicy]) -> tuple[bool, bool]:
    """(on Routes, on Pods): whether what policies enforce can change with a Route (a Service target, callers
    that declare a backend) or a Pod (a VirtualNode's service accounts). The controller's fast paths for Route and
    Pod changes do not redo authorization, so such a change then takes a full build."""
    on_routes = on_pods = False
    for policy in policies.values():
        targets = policy.spec.targets if policy.spec is not None else policy.targets_if_invalid
        on_routes |= any(t.kind == "Service" for t in targets)
        for rule in policy.spec.rules if policy.spec is not None else ():
            for source in rule.sources:
                on_routes |= source.declared_backends
                on_pods |= source.declared_backends or source.virtual_node is not None
    return on_routes, on_pods


def _principal(namespace: str, service_account: str | None) -> str:
    sa = _ANY_SA if service_account is None else re.escape(service_account)
    return f"spiffe://[^/]+/ns/{re.escape(namespace)}/sa/{sa}"


def translate_authz(
    model: Model,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
    namespace_defaults: Mapping[str, AuthzDefault],
    mesh_default: AuthzDefault,
) -> tuple[dict[ListenerKey, AuthzIR], list[ObjectStatus]]:
    """Each listener that a policy selects, or whose namespace (or mesh) default is not ``allow``, and the status
    of each policy."""
    index = _Index(model, nodes, routes_by_service)
    policies: dict[ListenerKey, list[AuthzPolicyIR]] = {}
    statuses: list[ObjectStatus] = []
    for key in sorted(model.authorization_policies):
        policy = model.authorization_policies[key]
        ir, targets, status = _policy(key, policy, index)
        statuses.append(status)
        for listener in targets:
            policies.setdefault(listener, []).append(ir(listener))
    out: dict[ListenerKey, AuthzIR] = {}
    for vn_key, spec in nodes.items():
        default = namespace_defaults.get(vn_key.namespace, mesh_default)
        for port in (li.port for li in spec.listeners):
            lk = (vn_key, port)
            chosen = tuple(policies.get(lk, ()))
            if chosen or default is not AuthzDefault.ALLOW:
                out[lk] = AuthzIR(policies=chosen, default=default)
    return out, statuses


class _Index:
    """What policies look up, built once per translation (not once per policy: 10,000 policies at 10,000 services
    would otherwise be quadratic): which Services' Routes reach each listener and the reverse, which VirtualNodes
    declare each Service as a backend, and each VirtualNode's service accounts."""

    def __init__(
        self,
        model: Model,
        nodes: Mapping[ObjectKey, VirtualNodeSpec],
        routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
    ) -> None:
        self.model, self.nodes = model, nodes
        self.reaching: dict[ListenerKey, set[ObjectKey]] = {}
        self.listeners_of: dict[ObjectKey, list[ListenerKey]] = {}
        for svc, routes in routes_by_service.items():  # cluster names are ``namespace/virtualnode/port``
            for route in routes:
                for wc in route.clusters:
                    lk = cluster_listener(wc.cluster)
                    if svc not in self.reaching.setdefault(lk, set()):
                        self.reaching[lk].add(svc)
                        self.listeners_of.setdefault(svc, []).append(lk)
        self._callers: dict[ObjectKey, list[ObjectKey]] | None = None
        self._accounts: dict[ObjectKey, list[str]] = {}

    def accounts(self, vn: ObjectKey) -> list[str]:
        found = self._accounts.get(vn)
        if found is None:
            found = self._accounts[vn] = sorted(service_accounts(self.model, self.nodes, vn))
        return found

    def declaring(self, services: Iterable[ObjectKey]) -> list[ObjectKey]:
        """The VirtualNodes that declare any of ``services`` among their backends."""
        if self._callers is None:
            self._callers = {}
            for key in sorted(self.nodes):
                for b in self.nodes[key].backends:
                    self._callers.setdefault(ObjectKey("Service", b.namespace, b.name), []).append(key)
        return sorted({vn for svc in services for vn in self._callers.get(svc, ())})


def _targets(targets: Iterable[AuthzTarget], index: _Index) -> _Resolved:
    nodes = index.nodes
    found: dict[ListenerKey, None] = {}
    missing: list[str] = []
    for t in targets:
        if t.kind == "VirtualNode":
            key = ObjectKey("VirtualNode", t.namespace, t.name)
            spec = nodes.get(key)
            ports = [li.port for li in spec.listeners] if spec is not None else []
            chosen = [(key, p) for p in ports if t.port is None or p == t.port]
        else:
            svc = ObjectKey("Service", t.namespace, t.name)
            chosen = [lk for lk in index.listeners_of.get(svc, ()) if t.port is None or lk[1] == t.port]
        if not chosen:
            missing.append(f"{t.kind} {t.namespace}/{t.name}" + (f" port {t.port}" if t.port else ""))
        found.update(dict.fromkeys(chosen))
    return _Resolved(tuple(sorted(found)), tuple(missing))


def service_accounts(model: Model, nodes: Mapping[ObjectKey, VirtualNodeSpec], vn: ObjectKey) -> set[str]:
    """The service accounts of the pods a VirtualNode selects."""
    spec = nodes.get(vn)
    if spec is None or not spec.pod_selector:
        return set()
    selector = spec.pod_selector.items()
    pods = names_in(model.pods, "Pod", vn.namespace)
    return {pod.service_account for pod in pods.values() if all(pod.labels.get(a) == b for a, b in selector)}


def _policy(
    key: ObjectKey,
    policy: AuthorizationPolicy,
    index: _Index,
) -> tuple[Callable[[ListenerKey], AuthzPolicyIR], tuple[ListenerKey, ...], ObjectStatus]:
    name = f"{key.namespace}/{key.name}"
    generation, origin = policy.meta.generation, policy.meta.origin
    spec = policy.spec
    if spec is None:  # fail safe: deny everything on the targets that can be read
        resolved = _targets(policy.targets_if_invalid, index)
        deny_all = AuthzPolicyIR(
            name=name, action=AuthzAction.DENY, audit=policy.audit_if_invalid, rules=(AuthzRuleIR(),), invalid=True
        )
        message = "; ".join(f"{e.path}: {e.message}" for e in policy.errors)
        if resolved.listeners:
            message += f" (its targets are denied to every caller until it is fixed: {len(resolved.listeners)} "
            message += "listener(s))"
        condition = Condition(type="Accepted", status=ConditionStatus.FALSE, reason="Invalid", message=message)
        return (
            (lambda _lk: deny_all),
            resolved.listeners,
            ObjectStatus(key=key, observed_generation=generation, origin=origin, conditions=(condition,)),
        )
    resolved = _targets(spec.targets, index)
    unknown: list[str] = []
    for rule in spec.rules:
        for source in rule.sources:
            if source.virtual_node is not None:
                vn = ObjectKey("VirtualNode", *source.virtual_node)
                if vn not in index.nodes:
                    unknown.append(f"VirtualNode {vn.namespace}/{vn.name}")

    def for_listener(lk: ListenerKey) -> AuthzPolicyIR:
        rules = tuple(_rule(rule, lk, index) for rule in spec.rules)
        return AuthzPolicyIR(name=name, action=spec.action, audit=spec.audit, rules=rules)

    conditions: list[Condition] = []
    if resolved.listeners:
        mode = "audited (not enforced)" if spec.audit else "enforced"
        conditions.append(
            Condition(
                type="Accepted",
                status=ConditionStatus.TRUE,
                reason="Accepted",
                message=f"{mode} on {len(resolved.listeners)} listener(s)"
                + (f"; not found: {', '.join(resolved.missing)}" if resolved.missing else ""),
            )
        )
    else:
        conditions.append(
            Condition(
                type="Accepted",
                status=ConditionStatus.FALSE,
                reason="TargetNotFound",
                message=f"selects nothing: {', '.join(resolved.missing) or 'no targets'}",
            )
        )
    conditions.append(
        Condition(
            type="ResolvedRefs",
            status=ConditionStatus.FALSE if unknown else ConditionStatus.TRUE,
            reason="BackendNotFound" if unknown else "ResolvedRefs",
            message=f"unknown callers (they match no one): {', '.join(sorted(set(unknown)))}" if unknown else "",
        )
    )
    return (
        for_listener,
        resolved.listeners,
        ObjectStatus(key=key, observed_generation=generation, origin=origin, conditions=tuple(conditions)),
    )


def _rule(rule: AuthzRule, lk: ListenerKey, index: _Index) -> AuthzRuleIR:
    principals: tuple[str, ...] | None = None
    if rule.sources:
        found: list[str] = []
        for source in rule.sources:
            found.extend(_source_principals(source, lk, index))
        principals = tuple(dict.fromkeys(found))
    return AuthzRuleIR(principals=principals, paths=rule.paths, methods=rule.methods)


def _source_principals(source: AuthzSource, lk: ListenerKey, index: _Index) -> list[str]:
    if source.service_account is not None:
        return [_principal(*source.service_account)]
    if source.namespace is not None:
        return [_principal(source.namespace, None)]
    if source.virtual_node is not None:
        vn = ObjectKey("VirtualNode", *source.virtual_node)
        return [_principal(vn.namespace, sa) for sa in index.accounts(vn)]
    callers = index.declaring(index.reaching.get(lk, ()))
    return [_principal(vn.namespace, sa) for vn in callers for sa in index.accounts(vn)]


@dataclass(frozen=True, slots=True)
class Decision:
    """What a listener's authorization does with one request from one caller identity (``meshctl explain``)."""

    allowed: bool
    by: str | None  # the policy (rule) that decided, or None for the default
    why: str
    audit: str | None = None  # what an Audit policy (or an audit default) would do differently


def _matches(rule: AuthzRuleIR, caller: str | None, method: str, path: str) -> bool:
    if rule.principals is not None and (caller is None or not any(re.fullmatch(p, caller) for p in rule.principals)):
        return False
    if rule.methods and method.upper() not in rule.methods:
        return False
    if not rule.paths:
        return True
    for p in rule.paths:
        if p.type == "Exact" and path == p.value:
            return True
        prefix = p.value.rstrip("/")
        if p.type == "PathPrefix" and (p.value == "/" or path == prefix or path.startswith(prefix + "/")):
            return True
    return False


def _first(policies: Iterable[AuthzPolicyIR], caller: str | None, method: str, path: str) -> str | None:
    for policy in policies:
        for i, rule in enumerate(policy.rules):
            if _matches(rule, caller, method, path):
                return policy.name if len(policy.rules) == 1 else f"{policy.name}#{i}"
    return None


def decide(authz: AuthzIR | None, caller: str | None, method: str, path: str) -> Decision:
    """As Envoy's two RBAC filters would decide (xds/envoy/rbac.py). ``caller``: the SPIFFE ID the caller proves,
    None for a plaintext caller; ``path`` without its query."""
    if authz is None:
        return Decision(True, None, "no policy selects the listener, and its default is allow")
    deny = [p for p in authz.policies if p.action is AuthzAction.DENY]
    allow = [p for p in authz.policies if p.action is AuthzAction.ALLOW]
    audit: list[str] = []
    if (hit := _first([p for p in deny if not p.audit], caller, method, path)) is not None:
        return Decision(False, hit, f"DENY policy {hit} matches")
    if (hit := _first([p for p in deny if p.audit], caller, method, path)) is not None:
        audit.append(f"the Audit DENY policy {hit} would deny it")
    enforced = [p for p in allow if not p.audit]
    if enforced or authz.default is AuthzDefault.DENY:
        hit = _first(enforced, caller, method, path)
        if hit is None:
            why = "no ALLOW policy matches" + (" (the namespace or mesh defaults to deny)" if not enforced else "")
            return Decision(False, None, why, "; ".join(audit) or None)
        verdict = Decision(True, hit, f"ALLOW policy {hit} matches")
    else:
        verdict = Decision(True, None, "no enforced policy restricts it")
    shadowed = len(allow) > len(enforced) or authz.default is AuthzDefault.AUDIT
    if shadowed and _first(allow, caller, method, path) is None:
        audit.append("no ALLOW policy would match (Audit policies and an audit default enforced)")
    return Decision(verdict.allowed, verdict.by, verdict.why, "; ".join(audit) or None)
