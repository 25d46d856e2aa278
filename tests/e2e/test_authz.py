"""Authorization between services for real (issue 29): the mTLS rig of tests/e2e/test_mtls.py (a captured callee
pod, a meshed caller with service account ``web``, unmeshed clients), AuthorizationPolicies written to the control
plane's manifests, and Envoy's own counters as the evidence.

Needs root (``ip netns``) and iptables (scripts/setup installs it)."""

from __future__ import annotations

import json

import yaml

from tests.conftest import eventually
from tests.e2e.test_mtls import (
    APP_PORT,
    MESHCTL,
    POD,
    PY,
    THROUGH_MESH,
    Rig,
    _mesh,
    _stats,
    _tool,
    namespaces,
    readable_dir,
)
from tests.manifests import API

__all__ = ["namespaces", "readable_dir"]  # the fixtures this module uses

URL = "http://127.0.0.1:15001"


def _policies(rig: Rig, *docs: dict) -> None:
    path = rig.manifests / "policies.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(list(docs)))
    tmp.rename(path)


def _policy(
    name: str, *, action: str = "ALLOW", mode: str = "Enforce", rules: list, target: dict | None = None
) -> dict:
    return {
        "apiVersion": API,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "targetRefs": [target or {"kind": "Service", "name": "reviews"}],
            "action": action,
            "mode": mode,
            "rules": rules,
        },
    }


def _call(rig: Rig, path: str, method: str = "GET") -> int | str:
    answer = _tool(rig.peer, "peek", f"{URL}{path}", "reviews.shop", "--method", method)
    return answer.get("status") or answer.get("error", "?")


async def _settled(rig: Rig) -> None:
    """A listener change applies to new connections; the callee's connections from before it are drained (each
    closed after its next response, all within Envoy's --drain-time-s): wait until none is left, so that what
    follows is judged by the new rules alone."""

    def drained() -> bool:
        stats = _stats(rig.pod, 9901)
        return stats.get("listener_manager.total_filter_chains_draining", 1) == 0

    await eventually(drained, timeout=30, interval=0.2)


def _counter(rig: Rig, name: str) -> int:
    return sum(v for k, v in _stats(rig.pod, 9901).items() if k.endswith(name) and ".rbac." in k)


async def test_policies_allow_deny_audit_and_a_namespace_default(namespaces, tmp_path, readable_dir):
    pod, peer = namespaces
    rig = Rig(pod, peer, readable_dir, tmp_path)
    rig.callee_stats_port = 15090
    _mesh(rig.manifests, "PERMISSIVE")
    admin_only = {"from": [{"serviceAccount": {"name": "admin"}}], "to": [{"paths": [{"type": "Exact", "value": "/admin"}], "methods": ["POST"]}]}  # fmt: skip
    public = {"from": [{"namespace": "shop"}], "to": [{"paths": [{"value": "/public"}], "methods": ["GET"]}]}
    try:
        await rig.start()
        # GET /public to everyone in the namespace, POST /admin to one ServiceAccount: web gets the first only.
        _policies(rig, _policy("reviews-api", rules=[public, admin_only]))
        await eventually(lambda: _call(rig, "/admin", "POST") == 403, timeout=30, interval=0.3)
        await _settled(rig)
        assert _call(rig, "/admin", "POST") == 403
        assert _call(rig, "/public") == 200
        explained = " ".join(
            peer.run(MESHCTL, "explain", "POST", "http://reviews.shop/admin", "--from", "shop/frontend", "--admin", "http://127.0.0.1:19000", check=False).stdout.split()
        )  # fmt: skip
        assert "authorization for spiffe://shop.test/ns/shop/sa/web: DENIED" in explained, explained
        assert "no ALLOW policy matches" in explained
        assert _call(rig, "/other") == 403  # nothing allows it
        denied = _counter(rig, "meshctl_allow.denied")
        assert denied >= 2, _stats(pod, 9901)
        assert _counter(rig, "policy.shop/reviews-api#0.allowed") >= 1  # per policy (rule), by name
        # ... which Prometheus sees as a label (Envoy's own tag for RBAC policy names)
        scraped = pod.run(PY, "-m", "tests.capture_tool", "get", "http://127.0.0.1:9901/stats/prometheus").stdout
        assert 'envoy_rbac_policy_name="shop/reviews-api#0"' in scraped, [ln for ln in scraped.splitlines() if "rbac" in ln]
        listed = json.loads(
            peer.run(MESHCTL, "get", "policies", "--admin", "http://127.0.0.1:19000", "-o", "json").stdout
        )
        (item,) = listed["policies"]
        assert item["name"] == "reviews-api" and item["accepted"] and listed["proxiesScraped"] == 1, listed
        assert item["counters"]["allowed"] >= 1 and item["counters"]["denied"] == 0, item  # denials: no match
        admin_only["from"] = [{"serviceAccount": {"name": "web"}}]
        _policies(rig, _policy("reviews-api", rules=[public, admin_only]))
        await eventually(lambda: _call(rig, "/admin", "POST") == 200, timeout=30, interval=0.3)
        await _settled(rig)

        # Audit: a DENY in audit mode lets the call through and counts it; enforced, it answers 403.
        deny_public = {"to": [{"paths": [{"value": "/public"}]}]}
        audit = _policy("no-public", action="DENY", mode="Audit", rules=[deny_public])
        _policies(rig, _policy("reviews-api", rules=[public, admin_only]), audit)
        await eventually(
            lambda: _call(rig, "/public") == 200 and _counter(rig, "meshctl_audit.shadow_denied") >= 1,
            timeout=30,
            interval=0.3,
        )
        await _settled(rig)
        shadow = _counter(rig, "meshctl_audit.shadow_denied")
        assert _call(rig, "/public") == 200
        assert _counter(rig, "meshctl_audit.shadow_denied") == shadow + 1
        listed = json.loads(
            peer.run(MESHCTL, "get", "policies", "--admin", "http://127.0.0.1:19000", "-o", "json").stdout
        )
        (audited,) = [p for p in listed["policies"] if p["name"] == "no-public"]
        assert audited["mode"] == "Audit" and audited["counters"]["auditDenied"] >= 1, audited
        audit["spec"]["mode"] = "Enforce"
        _policies(rig, _policy("reviews-api", rules=[public, admin_only]), audit)
        await eventually(lambda: _call(rig, "/public") == 403, timeout=30, interval=0.3)
        await _settled(rig)
        assert _call(rig, "/public") == 403
        assert _counter(rig, "meshctl_deny.denied") >= 1

        # The namespace defaults to deny; an allow-list names web alone. A plaintext caller (PERMISSIVE lets it in
        # at the TLS layer) proved nothing: denied.
        _mesh(rig.manifests, "PERMISSIVE", namespace_labels={"mesh.meshctl.dev/authorization": "deny"})
        _policies(rig, _policy("web-only", rules=[{"from": [{"serviceAccount": {"name": "web"}}]}]))
        await eventually(lambda: _call(rig, "/anything") == 200, timeout=30, interval=0.3)
        await _settled(rig)
        assert _call(rig, "/anything") == 200
        plain = _tool(peer, "peek", f"http://{POD}:{APP_PORT}/", "reviews")
        assert plain.get("status") == 403, plain
        _policies(rig)  # no policy: the namespace's default denies everyone
        await eventually(lambda: _call(rig, "/anything") == 403, timeout=30, interval=0.3)
        await _settled(rig)
        assert _tool(peer, *THROUGH_MESH).get("status") == 403
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        await rig.stop()


async def test_tcp_a_denied_connection_is_closed(namespaces, tmp_path, readable_dir):
    """A TCP listener (network RBAC): in a namespace that defaults to deny, a connection nobody allows is closed
    before a byte of it reaches the app; a policy that lets anyone in (no ``from``) opens it."""
    pod, peer = namespaces
    rig = Rig(pod, peer, readable_dir, tmp_path)
    _mesh(rig.manifests, "PERMISSIVE")
    direct = ("peek", f"http://{POD}:{APP_PORT}/", "reviews")  # plaintext, through the callee's TCP proxy
    try:
        await rig.start()
        _mesh(rig.manifests, "PERMISSIVE", protocol="tcp", namespace_labels={"mesh.meshctl.dev/authorization": "deny"})
        await eventually(lambda: "error" in _tool(peer, *direct), timeout=30, interval=0.3)
        await _settled(rig)
        # (The TCP proxy connects upstream as the caller connects, before a byte is judged; no byte gets through.)
        sent = "cluster.inbound|shop/reviews-v1|8080.upstream_cx_tx_bytes_total"
        served = _stats(pod, 9901).get(sent, 0)
        assert "error" in _tool(peer, *direct)
        assert _stats(pod, 9901)["inbound_8080.meshctl_allow.rbac.denied"] >= 1
        assert _stats(pod, 9901).get(sent, 0) == served
        _policies(rig, _policy("anyone", rules=[{}], target={"kind": "VirtualNode", "name": "reviews-v1"}))
        await eventually(lambda: _tool(peer, *direct).get("status") == 200, timeout=30, interval=0.3)
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        await rig.stop()
