"""Least privilege, checked against what the controller really calls.

Kubernetes: the test apiserver records every request (``ApiServer.calls``); the controller's carry the user agent
``meshctl-controller/…`` (meshctl/version.py). RBAC is evaluated the way the API server's RBAC authorizer does: the
rules of every Role and ClusterRole bound to the controller's ServiceAccount (a RoleBinding grants only in its own
namespace; ``resourceNames`` never matches a request without a name: list, watch, create).

AWS: moto_server records every request it serves (MOTO_ENABLE_RECORDING); the action comes from the form body and
the IAM service prefix from the SigV4 credential scope; the controller's calls carry the same user agent suffix
(botocore ``user_agent_extra``). The IAM policy is evaluated as IAM does for ``Allow`` statements with wildcards.

Both checks report calls nothing allows and grants nothing used. ``shipped_*`` read what we install: the manifests
``meshctl install --ingress`` prints and deploy/iam/ingress-policy.json.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from meshctl.kube.install_manifests import InstallOptions, render
from meshctl.version import CONTROLLER_USER_AGENT
from tests.apiserver import ApiCall
from tests.ingress_harness import CLUSTER

ROOT = Path(__file__).parent.parent
POLICY = ROOT / "deploy" / "iam" / "ingress-policy.json"
SERVICE_ACCOUNT = ("meshctl-system", "meshctl")
CONTROLLER_AGENT = CONTROLLER_USER_AGENT.split("/")[0] + "/"

# What Kubernetes grants every authenticated client (ClusterRoles system:discovery, system:public-info-viewer).
_PUBLIC_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz", "/livez", "/readyz")


def is_controller(user_agent: str) -> bool:
    return CONTROLLER_AGENT in user_agent


# --- Kubernetes RBAC -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One verb on one resource (and name) from one rule: the unit a rule can grant too much of."""

    role: str  # Kind/name (namespace/name for a Role)
    namespace: str | None  # where it applies: None everywhere (ClusterRoleBinding), else a RoleBinding's namespace
    group: str
    resource: str  # with /subresource
    verb: str
    name: str = ""  # "" any

    def allows(self, call: ApiCall) -> bool:
        if call.path:
            return False
        if self.namespace is not None and self.namespace != call.namespace:
            return False
        resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
        return (
            self.group in ("*", call.group)
            and self.resource in ("*", resource)
            and self.verb in ("*", call.verb)
            and (not self.name or self.name == call.name)
        )

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace is not None else ""
        name = f" {self.name}" if self.name else ""
        group = f".{self.group}" if self.group else ""
        return f"{self.role}: {self.verb} {self.resource}{group}{name}{where}"


def _bound(binding: dict[str, Any]) -> bool:
    namespace, name = SERVICE_ACCOUNT
    return any(
        s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == namespace
        for s in binding.get("subjects") or []
    )


def grants(docs: Iterable[dict[str, Any]]) -> list[Grant]:
    """Every atom of every rule bound to the controller's ServiceAccount."""
    docs = list(docs)
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}
    out: list[Grant] = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or not _bound(binding):
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], (scope or "") if ref["kind"] == "Role" else "", ref["name"]))
        if role is None:
            continue
        label = f"{ref['kind']}/{ref['name']}"
        for rule in role.get("rules") or []:
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        for name in rule.get("resourceNames") or [""]:
                            out.append(Grant(label, scope, group, resource, verb, name))
    return out


def _public(call: ApiCall) -> bool:
    return call.verb == "get" and any(fnmatch.fnmatchcase(call.path, p) for p in _PUBLIC_PATHS)


@dataclass(frozen=True)
class Verdict:
    denied: list[str]  # calls no grant allows, once each
    unused: list[str]  # grants no call used

    @property
    def ok(self) -> bool:
        return not self.denied and not self.unused

    def report(self) -> str:
        lines = [f"denied: {c}" for c in self.denied] + [f"never used: {g}" for g in self.unused]
        return "\n".join(lines)


def check_rbac(granted: list[Grant], calls: Iterable[ApiCall]) -> Verdict:
    distinct = sorted(set(_anonymous(c) for c in calls), key=str)
    denied = [c for c in distinct if not (c.path and _public(c)) and not any(g.allows(c) for g in granted)]
    unused = [g for g in granted if not any(g.allows(c) for c in distinct)]
    return Verdict([str(c) for c in denied], [str(g) for g in unused])


def _anonymous(call: ApiCall) -> ApiCall:
    return ApiCall(call.verb, call.group, call.resource, call.subresource, call.namespace, call.name, call.path)


@functools.cache
def _shipped_manifests() -> tuple[dict[str, Any], ...]:
    return tuple(render(InstallOptions(ingress=True, cluster_name=CLUSTER)))


def shipped_manifests() -> list[dict[str, Any]]:
    """What `meshctl install --ingress --cluster-name <the tests' cluster>` prints (a copy: callers may change it)."""
    return copy.deepcopy(list(_shipped_manifests()))


def shipped_grants() -> list[Grant]:
    """The RBAC `meshctl install --ingress` ships (the eks overlay renders the same objects: tests/test_deploy.py)."""
    return grants(_shipped_manifests())


def controller_calls(calls: Iterable[ApiCall]) -> list[ApiCall]:
    return [c for c in calls if is_controller(c.user_agent)]


# --- AWS IAM ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class AwsCall:
    action: str  # service:Action, as IAM names it
    user_agent: str = ""

    def __str__(self) -> str:
        return self.action


_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


def read_recording(path: Path, offset: int = 0) -> tuple[list[AwsCall], int]:
    """The AWS calls moto_server recorded after byte ``offset`` of its recording, and the offset after them."""
    if not path.exists():
        return [], offset
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line being written is read next time
    calls = []
    for line in data[:end].splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
        scope = _SCOPE.search(headers.get("authorization", ""))
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        action = (parse_qs(body).get("Action") or [""])[0]
        if not action and "x-amz-target" in headers:  # the JSON protocols (ACM PCA): Target "ACMPrivateCA.Issue..."
            action = headers["x-amz-target"].rpartition(".")[2]
        if scope and action:
            calls.append(AwsCall(f"{scope.group(1)}:{action}", headers.get("user-agent", "")))
            if scope.group(1) == "ec2" and action.startswith("Create") and "TagSpecification" in body:
                # Tags given to a create are authorized as ec2:CreateTags too (EC2's tag on create).
                calls.append(AwsCall("ec2:CreateTags", headers.get("user-agent", "")))
    return calls, offset + end


def policy_actions(policy: dict[str, Any]) -> list[str]:
    actions: list[str] = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        listed = statement["Action"]
        actions.extend([listed] if isinstance(listed, str) else listed)
    return actions


def shipped_policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(POLICY.read_text())
    return policy


IDENTITY_POLICY = ROOT / "deploy" / "iam" / "identity-policy.json"


def shipped_identity_policy() -> dict[str, Any]:
    """What workload certificates from AWS Private CA need (``serve --acm-pca-arn``)."""
    policy: dict[str, Any] = json.loads(IDENTITY_POLICY.read_text())
    return policy


DISCOVERY_POLICY = ROOT / "deploy" / "iam" / "discovery-policy.json"


def shipped_discovery_policy() -> dict[str, Any]:
    """What Cloud Map discovery needs (VirtualNodes with ``serviceDiscovery.awsCloudMap``)."""
    policy: dict[str, Any] = json.loads(DISCOVERY_POLICY.read_text())
    return policy


def all_shipped_policies() -> dict[str, Any]:
    return {
        "Statement": shipped_policy()["Statement"]
        + shipped_identity_policy()["Statement"]
        + shipped_discovery_policy()["Statement"]
    }


def check_iam(policy: dict[str, Any], calls: Iterable[AwsCall]) -> Verdict:
    actions = policy_actions(policy)
    made = sorted({c.action for c in calls})
    denied = [a for a in made if not any(fnmatch.fnmatchcase(a.lower(), p.lower()) for p in actions)]
    unused = [p for p in actions if not any(fnmatch.fnmatchcase(a.lower(), p.lower()) for a in made)]
    return Verdict(denied, unused)


def controller_aws_calls(calls: Iterable[AwsCall]) -> list[AwsCall]:
    return [c for c in calls if is_controller(c.user_agent)]
