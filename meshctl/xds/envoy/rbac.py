"""Authorization on a VirtualNode's inbound listener: Envoy's RBAC filters (HTTP before the router, network before
the TCP proxy), from ``AuthzIR``.

Two filters, in Istio's evaluation order: DENY policies (any match: 403, a closed TCP connection), then ALLOW
policies (when any selects the listener, or its default is deny: only a match passes). Audit policies, and an
``audit`` default, become shadow rules: Envoy counts what they would deny (``shadow_denied``) and lets the call
through. HTTP filters also count per policy (``track_per_rule_stats``).
"""

from __future__ import annotations

from typing import TypeVar

from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2

from meshctl.model.authz import AuthzAction, AuthzDefault
from meshctl.translate.ir import AuthzIR, AuthzPolicyIR, AuthzRuleIR
from meshctl.xds.envoy.common import any_of

__all__ = ["AUDIT_PREFIX", "DENY_PREFIX", "http_rbac_filters", "network_rbac_filters"]

_Config = TypeVar("_Config", http_rbac_pb2.RBAC, network_rbac_pb2.RBAC)

# Counters: http.<listener>.rbac.<prefix>{allowed,denied,shadow_allowed,shadow_denied} (TCP: <listener>.rbac...).
DENY_PREFIX = "meshctl_deny."  # the DENY filter
ALLOW_PREFIX = "meshctl_allow."  # the ALLOW filter
AUDIT_PREFIX = "meshctl_audit."  # either filter's shadow rules (Audit policies, an audit default)


def _principal(rule: AuthzRuleIR) -> list[rbac_pb2.Principal]:
    if rule.principals is None:
        return [rbac_pb2.Principal(any=True)]
    if not rule.principals:  # sources that name no one (a VirtualNode without pods): match nothing
        return [rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))]
    return [
        rbac_pb2.Principal(
            authenticated=rbac_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))
            )
        )
        for regex in rule.principals
    ]


def _permission(rule: AuthzRuleIR, *, http: bool) -> rbac_pb2.Permission:
    parts: list[rbac_pb2.Permission] = []
    if http and rule.paths:
        paths = []
        for p in rule.paths:
            matcher = string_pb2.StringMatcher(exact=p.value) if p.type == "Exact" else _prefix(p.value)
            paths.append(rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher)))
        parts.append(
            paths[0] if len(paths) == 1 else rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=paths))
        )
    if http and rule.methods:
        methods = [
            rbac_pb2.Permission(header=route_components_pb2.HeaderMatcher(name=":method", exact_match=m))
            for m in rule.methods
        ]
        parts.append(_any_of(methods))
    if not parts:
        return rbac_pb2.Permission(any=True)
    return parts[0] if len(parts) == 1 else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def _any_of(permissions: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if len(permissions) == 1:
        return permissions[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=permissions))


def _prefix(value: str) -> string_pb2.StringMatcher:
    """``PathPrefix`` as the Gateway API means it: whole segments (/admin matches /admin and /admin/x, not /adminx)."""
    if value == "/":
        return string_pb2.StringMatcher(prefix="/")
    trimmed = value.rstrip("/")
    escaped = "".join("\\" + c if c in r".^$*+?()[]{}|\\" else c for c in trimmed)
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=f"{escaped}(/.*)?"))


def _rbac(policies: list[AuthzPolicyIR], action: int, *, http: bool) -> rbac_pb2.RBAC:
    """A policy ORs its rules, each (any of its principals) AND (its permission): as Envoy pairs a policy's
    permissions and principals as (any permission) AND (any principal), each rule is an RBAC policy of its own,
    named ``<namespace>/<policy>`` (one rule) or ``<namespace>/<policy>#<i>``: the per-policy counters' names."""
    rbac = rbac_pb2.RBAC(action=action)
    for policy in policies:
        for i, rule in enumerate(policy.rules):
            name = policy.name if len(policy.rules) == 1 else f"{policy.name}#{i}"
            entry = rbac.policies[name]
            entry.permissions.append(_permission(rule, http=http))
            entry.principals.extend(_principal(rule))
    return rbac


def _split(authz: AuthzIR) -> tuple[list[AuthzPolicyIR], list[AuthzPolicyIR], list[AuthzPolicyIR], list[AuthzPolicyIR]]:
    deny = [p for p in authz.policies if p.action is AuthzAction.DENY]
    allow = [p for p in authz.policies if p.action is AuthzAction.ALLOW]
    return (
        [p for p in deny if not p.audit],
        [p for p in deny if p.audit],
        [p for p in allow if not p.audit],
        allow,
    )


def _plans(authz: AuthzIR, *, http: bool) -> list[tuple[str, rbac_pb2.RBAC | None, rbac_pb2.RBAC | None]]:
    """(stat prefix, enforced rules, shadow rules) of each filter to install, in order."""
    deny, deny_audit, allow, allow_all = _split(authz)
    plans: list[tuple[str, rbac_pb2.RBAC | None, rbac_pb2.RBAC | None]] = []
    if deny or deny_audit:
        plans.append(
            (
                DENY_PREFIX,
                _rbac(deny, rbac_pb2.RBAC.DENY, http=http) if deny else None,
                _rbac(deny_audit, rbac_pb2.RBAC.DENY, http=http) if deny_audit else None,
            )
        )
    enforce_allow = bool(allow) or authz.default is AuthzDefault.DENY
    audit_allow = len(allow_all) > len(allow) or authz.default is AuthzDefault.AUDIT
    if enforce_allow or audit_allow:
        plans.append(
            (
                ALLOW_PREFIX,
                _rbac(allow, rbac_pb2.RBAC.ALLOW, http=http) if enforce_allow else None,
                _rbac(allow_all, rbac_pb2.RBAC.ALLOW, http=http) if audit_allow else None,
            )
        )
    return plans


def _with_rules(config: _Config, rules: rbac_pb2.RBAC | None, shadow: rbac_pb2.RBAC | None) -> _Config:
    if rules is not None:
        config.rules.CopyFrom(rules)
    if shadow is not None:
        config.shadow_rules.CopyFrom(shadow)
    return config


def http_rbac_filters(authz: AuthzIR) -> list[hcm_pb2.HttpFilter]:
    filters = []
    for prefix, rules, shadow in _plans(authz, http=True):
        config = http_rbac_pb2.RBAC(rules_stat_prefix=prefix, shadow_rules_stat_prefix=AUDIT_PREFIX)
        config.track_per_rule_stats = True
        _with_rules(config, rules, shadow)
        filters.append(hcm_pb2.HttpFilter(name="envoy.filters.http.rbac", typed_config=any_of(config)))
    return filters


def network_rbac_filters(authz: AuthzIR, stat_prefix: str) -> list[listener_components_pb2.Filter]:
    filters = []
    for prefix, rules, shadow in _plans(authz, http=False):
        config = network_rbac_pb2.RBAC(stat_prefix=f"{stat_prefix}.{prefix}", shadow_rules_stat_prefix=AUDIT_PREFIX)
        _with_rules(config, rules, shadow)
        filters.append(listener_components_pb2.Filter(name="envoy.filters.network.rbac", typed_config=any_of(config)))
    return filters
