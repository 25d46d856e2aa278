"""The evaluators the least-privilege proof rests on (tests/least_privilege.py) decide as Kubernetes RBAC and IAM do."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kubernetes import client

from meshctl.version import CONTROLLER_USER_AGENT
from tests.apiserver import ApiCall, ApiServer
from tests.least_privilege import check_iam, check_rbac, controller_calls, grants, is_controller, read_recording

SA = {"kind": "ServiceAccount", "name": "meshctl", "namespace": "meshctl-system"}


def _role(kind: str, name: str, rules: list[dict], namespace: str | None = None) -> dict:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, "rules": rules}


def _binding(kind: str, role_kind: str, name: str, namespace: str | None = None, subject: dict = SA) -> dict:
    meta = {"name": name} | ({"namespace": namespace} if namespace else {})
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name}
    return {"kind": kind, "metadata": meta, "roleRef": ref, "subjects": [subject]}


def test_rbac_scopes_names_subresources_and_subjects_as_kubernetes_does() -> None:
    docs = [
        _role("ClusterRole", "reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]),
        _binding("ClusterRoleBinding", "ClusterRole", "reader"),
        # A ClusterRole bound by a RoleBinding grants only in that namespace.
        _role("ClusterRole", "writer", [{"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]}]),
        _binding("RoleBinding", "ClusterRole", "writer", namespace="shop"),
        _role(
            "Role",
            "lease",
            [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["l"], "verbs": ["*"]}],
            namespace="sys",
        ),
        _binding("RoleBinding", "Role", "lease", namespace="sys"),
        # Bound to someone else: grants us nothing.
        _role("ClusterRole", "other", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        _binding("ClusterRoleBinding", "ClusterRole", "other", subject={**SA, "name": "someone-else"}),
    ]
    granted = grants(docs)
    allowed = [
        ApiCall("watch", "", "pods"),
        ApiCall("patch", "", "pods", "status", "shop", "web-1"),
        ApiCall("update", "coordination.k8s.io", "leases", namespace="sys", name="l"),
        ApiCall("get", path="/version/"),  # public to every authenticated client
    ]
    denied = [
        ApiCall("patch", "", "pods", "", "shop", "web-1"),  # the subresource is not the resource
        ApiCall("patch", "", "pods", "status", "other", "web-1"),  # outside the RoleBinding's namespace
        ApiCall("create", "coordination.k8s.io", "leases", namespace="sys"),  # resourceNames never match create
        ApiCall("get", "coordination.k8s.io", "leases", namespace="elsewhere", name="l"),
        ApiCall("delete", "", "secrets", namespace="sys", name="x"),
        ApiCall("get", path="/metrics"),
    ]
    for call in allowed:
        assert check_rbac(granted, [call]).denied == [], call
    for call in denied:
        assert check_rbac(granted, [call]).denied == [str(call)], call
    verdict = check_rbac(granted, allowed)
    assert verdict.unused == ["ClusterRole/reader: list pods"]  # watch was used, list never


def test_iam_wildcards_and_case_and_the_unused_direction() -> None:
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": ["elasticloadbalancing:Describe*", "ec2:DescribeSubnets"], "Resource": "*"}
        ]
    }
    from tests.least_privilege import AwsCall

    verdict = check_iam(policy, [AwsCall("elasticloadbalancing:DescribeTags"), AwsCall("ec2:describesubnets")])
    assert verdict.ok
    verdict = check_iam(policy, [AwsCall("elasticloadbalancing:DeleteRule")])
    assert verdict.denied == ["elasticloadbalancing:DeleteRule"]
    assert verdict.unused == ["elasticloadbalancing:Describe*", "ec2:DescribeSubnets"]


def test_moto_recordings_are_read_incrementally_and_by_credential_scope(tmp_path: Path) -> None:
    path = tmp_path / "recording.jsonl"
    auth = "AWS4-HMAC-SHA256 Credential=testing/20261124/us-east-1/elasticloadbalancing/aws4_request, Signed..."
    entries = [
        {"headers": {"Authorization": auth, "User-Agent": f"Boto3/1 {CONTROLLER_USER_AGENT}"}, "body": "Action=A&V=1"},
        {
            "headers": {"Authorization": auth.replace("elasticloadbalancing", "ec2"), "User-Agent": "Boto3/1"},
            "body": base64.b64encode(b"Action=DescribeSubnets").decode(),
            "body_encoded": True,
        },
    ]
    path.write_text(json.dumps(entries[0]) + "\n" + json.dumps(entries[1]) + "\n" + '{"partial')
    calls, offset = read_recording(path)
    assert [c.action for c in calls] == ["elasticloadbalancing:A", "ec2:DescribeSubnets"]
    assert [is_controller(c.user_agent) for c in calls] == [True, False]
    with path.open("a") as f:
        f.write('": 1}\n')
    more, _ = read_recording(path, offset)
    assert more == []  # a line without Action or scope is not an AWS call


def test_the_apiserver_records_calls_as_rbac_sees_them() -> None:
    server = ApiServer()
    server.start()
    try:
        api = server.controller_client()
        core = client.CoreV1Api(api)
        core.create_namespaced_secret("sys", {"metadata": {"name": "s"}})
        core.patch_namespaced_secret("s", "sys", {"metadata": {"labels": {"a": "b"}}})
        core.list_pod_for_all_namespaces()
        client.CoreV1Api(server.client()).list_namespaced_pod("shop")  # the test's own call
        client.VersionApi(api).get_code(_preload_content=False)
        try:
            client.CustomObjectsApi(api).list_namespaced_custom_object("x.dev", "v1", "shop", "things")
        except client.ApiException as exc:
            assert exc.status == 404  # authorized (and recorded) before it is found, as RBAC does
        recorded = [str(c) for c in controller_calls(server.calls)]
        assert recorded == [
            "create secrets -n sys",
            "patch secrets s -n sys",
            "list pods",
            "get /version/",
            "list things.x.dev -n shop",
        ]
    finally:
        server.stop()
