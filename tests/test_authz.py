"""Authorization policies (issue 29): how they parse and fail, which listeners they select, how a request is
decided (what `meshctl explain` says), and which changes must rebuild them. Envoy's side: tests/e2e/test_authz.py
and the golden case authz-policies (validated by Envoy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshctl.admin.routes_view import routes_document
from meshctl.model import ObjectKey
from meshctl.model.authz import AuthzAction, AuthzDefault
from meshctl.parse.documents import parse_keyed
from meshctl.sources import load_manifests
from meshctl.translate import translate_mesh
from meshctl.translate.authz import authz_dependencies, decide
from tests.manifests import API, route, service, virtual_node, workload, write

WEB = "spiffe://td/ns/demo/sa/web"


def _policy(name: str = "p", **spec: object) -> dict:
    body = {"targetRefs": [{"kind": "Service", "name": "reviews"}], **spec}
    return {
        "apiVersion": API,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": body,
    }


def _mesh(root: Path, *policies: dict, namespace_label: str | None = None) -> Path:
    pod, eps, vn = workload("reviews", "v1", 8080)
    web = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "demo", "labels": {"app": "frontend"}}, "spec": {"serviceAccountName": "web"}}  # fmt: skip
    labels = {"mesh.meshctl.dev/authorization": namespace_label} if namespace_label else {}
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": labels}}
    write(
        root / "mesh.yaml",
        ns,
        service("reviews"),
        pod,
        eps,
        vn,
        web,
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
        *policies,
    )
    return root


def _authz(root: Path, default: AuthzDefault = AuthzDefault.ALLOW):
    mesh = translate_mesh(load_manifests(root), default_authz=default)
    return mesh, mesh.authz.get((ObjectKey("VirtualNode", "demo", "reviews-v1"), 8080))


def test_a_policy_parses_into_targets_sources_and_operations() -> None:
    doc = _policy(
        action="DENY",
        mode="Audit",
        rules=[
            {
                "from": [{"serviceAccount": {"name": "web"}}, {"namespace": "ops"}, {"virtualNode": {"name": "a", "namespace": "x"}}],
                "to": [{"paths": [{"type": "Exact", "value": "/admin"}], "methods": ["post"]}, {"grpc": [{"service": "shop.Cart", "method": "Pay"}, {"service": "shop.Admin"}]}],
            }
        ],
    )  # fmt: skip
    parsed = parse_keyed(doc)
    assert parsed is not None and parsed.obj.spec is not None, parsed
    spec = parsed.obj.spec
    assert spec.action is AuthzAction.DENY and spec.audit
    first, second = spec.rules  # one per operation, with the same callers
    assert [s.service_account or s.namespace or s.virtual_node for s in first.sources] == [
        ("demo", "web"),
        "ops",
        ("x", "a"),
    ]
    assert [(p.type, p.value) for p in first.paths] == [("Exact", "/admin")] and first.methods == ("POST",)
    assert [(p.type, p.value) for p in second.paths] == [("Exact", "/shop.Cart/Pay"), ("PathPrefix", "/shop.Admin/")]


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"targetRefs": []}, "spec.targetRefs"),
        ({"targetRefs": [{"kind": "Pod", "name": "x"}]}, "spec.targetRefs[0].kind"),
        ({"action": "MAYBE"}, "spec.action"),
        ({"rules": [{"from": [{"namespace": "a", "serviceAccount": {"name": "b"}}]}]}, "spec.rules[0].from[0]"),
        ({"rules": [{"to": [{"paths": [{"value": "admin"}]}]}]}, "spec.rules[0].to[0].paths[0].value"),
        ({"rules": [{"to": [{"grpc": [{"service": "bad name"}]}]}]}, "spec.rules[0].to[0].grpc[0].service"),
    ],
)
def test_a_bad_policy_names_its_field(spec: dict, path: str) -> None:
    doc = _policy(**spec)
    if "targetRefs" in spec:
        doc["spec"]["targetRefs"] = spec["targetRefs"]
    parsed = parse_keyed(doc)
    assert parsed is not None and parsed.obj.spec is None
    assert path in [e.path for e in parsed.obj.errors], parsed.obj.errors


def test_decisions_follow_deny_then_allow_then_the_default(tmp_path: Path) -> None:
    allow = _policy("api", rules=[{"from": [{"serviceAccount": {"name": "web"}}], "to": [{"paths": [{"value": "/api"}], "methods": ["GET"]}]}])  # fmt: skip
    deny = _policy("no-debug", action="DENY", rules=[{"to": [{"paths": [{"value": "/api/debug"}]}]}])
    _, authz = _authz(_mesh(tmp_path, allow, deny))
    assert decide(authz, WEB, "GET", "/api/x").allowed  # ALLOW matches (segment prefix)
    assert decide(authz, WEB, "GET", "/api").by == "demo/api"
    assert not decide(authz, WEB, "GET", "/apix").allowed  # /api is a whole segment
    assert not decide(authz, WEB, "POST", "/api/x").allowed
    assert not decide(authz, "spiffe://td/ns/demo/sa/other", "GET", "/api/x").allowed
    assert not decide(authz, None, "GET", "/api/x").allowed  # a plaintext caller proves nothing
    denied = decide(authz, WEB, "GET", "/api/debug")
    assert not denied.allowed and denied.by == "demo/no-debug"  # DENY first
    _, none = _authz(_mesh(tmp_path))
    assert none is None and decide(none, None, "GET", "/").allowed  # nothing selects it: allowed


def test_audit_lets_through_and_says_what_it_would_do(tmp_path: Path) -> None:
    deny = _policy("no-debug", action="DENY", mode="Audit", rules=[{"to": [{"paths": [{"value": "/debug"}]}]}])
    _, authz = _authz(_mesh(tmp_path, deny))
    d = decide(authz, WEB, "GET", "/debug")
    assert d.allowed and "would deny" in (d.audit or "")
    _, authz = _authz(_mesh(tmp_path, namespace_label="audit"))
    d = decide(authz, WEB, "GET", "/")
    assert d.allowed and "no ALLOW policy would match" in (d.audit or "")


def test_namespace_and_mesh_defaults(tmp_path: Path) -> None:
    _, authz = _authz(_mesh(tmp_path), AuthzDefault.DENY)
    assert authz is not None and not decide(authz, WEB, "GET", "/").allowed  # the mesh's default
    _, authz = _authz(_mesh(tmp_path, namespace_label="allow"), AuthzDefault.DENY)
    assert authz is None  # the namespace's label beats the mesh's flag
    only_web = _policy(rules=[{"from": [{"virtualNode": {"name": "frontend"}}]}])
    _, authz = _authz(_mesh(tmp_path, only_web, namespace_label="deny"))
    assert decide(authz, WEB, "GET", "/").allowed  # frontend's pods run as web
    assert not decide(authz, "spiffe://td/ns/demo/sa/default", "GET", "/").allowed


def test_a_broken_policy_denies_its_targets_and_says_so(tmp_path: Path) -> None:
    broken = _policy("broken", rules=[{"to": [{"methods": ["FETCH"]}]}])
    mesh, authz = _authz(_mesh(tmp_path, broken))
    assert not decide(authz, WEB, "GET", "/").allowed
    status = mesh.status_by_key[ObjectKey("AuthorizationPolicy", "demo", "broken")]
    (accepted,) = [c for c in status.conditions if c.type == "Accepted"]
    assert accepted.reason == "Invalid" and "denied to every caller" in accepted.message
    assert "methods" in accepted.message


def test_a_policy_selecting_nothing_is_not_accepted(tmp_path: Path) -> None:
    lost = _policy("lost")
    lost["spec"]["targetRefs"] = [{"kind": "VirtualNode", "name": "nobody"}]
    mesh, _ = _authz(_mesh(tmp_path, lost))
    (accepted, _) = mesh.status_by_key[ObjectKey("AuthorizationPolicy", "demo", "lost")].conditions
    assert accepted.status == "False" and accepted.reason == "TargetNotFound"


def test_route_and_pod_changes_rebuild_policies_that_depend_on_them(tmp_path: Path) -> None:
    by_service = _policy(rules=[{"from": [{"namespace": "demo"}]}])
    by_node = _policy(rules=[{"from": [{"virtualNode": {"name": "frontend"}}]}])
    by_node["spec"]["targetRefs"] = [{"kind": "VirtualNode", "name": "reviews-v1"}]
    assert authz_dependencies(load_manifests(_mesh(tmp_path, by_service)).authorization_policies) == (True, False)
    assert authz_dependencies(load_manifests(_mesh(tmp_path, by_node)).authorization_policies) == (False, True)


def test_explain_view_says_which_policy_decides(tmp_path: Path) -> None:
    allow = _policy("api", rules=[{"from": [{"serviceAccount": {"name": "web"}}], "to": [{"methods": ["GET"]}]}])
    _mesh(tmp_path, allow, namespace_label="deny")
    _mesh_tls = tmp_path / "mesh.yaml"
    _mesh_tls.write_text(_mesh_tls.read_text().replace("protocol: http", "protocol: http\n    tls: {mode: STRICT}"))
    mesh = translate_mesh(load_manifests(tmp_path))
    doc = routes_document(mesh, {}, source="demo/frontend", method="GET", path="/x", service_accounts=lambda _: ["web"])
    ((verdict,),) = [c["authorization"] for c in doc["clusters"].values()]
    assert verdict["allowed"] and verdict["by"] == "demo/api" and verdict["caller"].endswith("/ns/demo/sa/web")
    doc = routes_document(
        mesh, {}, source="demo/frontend", method="DELETE", path="/x", service_accounts=lambda _: ["web"]
    )
    ((verdict,),) = [c["authorization"] for c in doc["clusters"].values()]
    assert not verdict["allowed"] and verdict["why"] == "no ALLOW policy matches"


def test_policy_counters_are_read_from_envoys_prometheus_text() -> None:
    from meshctl.admin.policies_view import parse_policy_counters

    text = "\n".join(
        [  # as Envoy 1.40 prints them (seen in tests/e2e/test_authz.py)
            "# TYPE envoy_http_rbac_policy_allowed counter",
            'envoy_http_rbac_policy_allowed{envoy_rbac_policy_name="shop/api#0",envoy_rbac_http_prefix="meshctl_allow",envoy_http_conn_manager_prefix="inbound_8080"} 3',
            'envoy_http_rbac_policy_allowed{envoy_rbac_policy_name="shop/api#1",envoy_rbac_http_prefix="meshctl_allow",envoy_http_conn_manager_prefix="inbound_8080"} 2',
            'envoy_http_rbac_policy_denied{envoy_rbac_policy_name="shop/no",envoy_rbac_http_prefix="meshctl_deny",envoy_http_conn_manager_prefix="inbound_8080"} 4',
            'envoy_http_rbac_policy_shadow_denied{envoy_rbac_policy_name="shop/no-public",envoy_rbac_http_prefix="meshctl_audit",envoy_http_conn_manager_prefix="inbound_8080"} 5',
            'envoy_http_rbac_denied{envoy_rbac_http_prefix="meshctl_allow",envoy_http_conn_manager_prefix="inbound_8080"} 9',
        ]
    )  # fmt: skip
    assert parse_policy_counters(text) == {
        "shop/api": {"allowed": 5, "denied": 0, "auditDenied": 0},
        "shop/no": {"allowed": 0, "denied": 4, "auditDenied": 0},
        "shop/no-public": {"allowed": 0, "denied": 0, "auditDenied": 5},
    }


def test_declared_backends_lets_in_exactly_the_nodes_that_declare_the_service(tmp_path: Path) -> None:
    """App Mesh's backends as an allow-list: frontend declares reviews, and its pods run as web."""
    declared = _policy("declared", rules=[{"from": [{"declaredBackends": {}}]}])
    _, authz = _authz(_mesh(tmp_path, declared))
    assert decide(authz, WEB, "GET", "/").allowed
    assert not decide(authz, "spiffe://td/ns/demo/sa/default", "GET", "/").allowed
