"""The shipped IAM policy for the ingress reconciler scopes what it may change to what this cluster made, as LBC's
policy does: creates only with our cluster tag in the request (aws:RequestTag), changes and deletes only of
resources carrying it (aws:ResourceTag). moto does not evaluate IAM, so this reads the policy itself; the recorded
calls (tests/e2e/test_least_privilege.py) prove each action is used and needed."""

from __future__ import annotations

import json
from pathlib import Path

from meshctl.ingress.naming import CLUSTER_TAG

POLICY = json.loads((Path(__file__).parent.parent / "deploy" / "iam" / "ingress-policy.json").read_text())
READ_ONLY = ("Describe", "Get", "List")

# Statements that cannot carry the tag condition, and why.
UNSCOPED = {
    # Listeners and rules carry no tags of their own; they exist only on a load balancer, which only we create
    # with our tag and only we can delete.
    "ListenersAndRulesOfALoadBalancer",
    # A TargetGroupBinding fills a target group the user made (untagged by us): only its targets change.
    "TargetsOfAnyTargetGroupATargetGroupBindingNames",
    # Rules on the targets' groups (the user's, untagged by us) as well as ours; only rules described
    # elbv2.meshctl.dev/targetGroupBinding=shared are ever revoked there (meshctl/ingress/target_rules.py).
    "RulesOnTheTargetsAndOurGroups",
}


def _actions(statement: dict) -> list[str]:
    listed = statement["Action"]
    return [listed] if isinstance(listed, str) else list(listed)


def _mutating(action: str) -> bool:
    return not action.split(":", 1)[1].startswith(READ_ONLY)


def test_every_mutating_statement_is_scoped_to_this_clusters_tag_or_says_why_not():
    for statement in POLICY["Statement"]:
        assert statement["Effect"] == "Allow"
        if not any(_mutating(a) for a in _actions(statement)):
            continue
        if statement["Sid"] in UNSCOPED:
            assert "Condition" not in statement or statement["Condition"], statement["Sid"]
            continue
        nulls = statement.get("Condition", {}).get("Null", {})
        scoped = {key: value for key, value in nulls.items() if key.endswith(f"Tag/{CLUSTER_TAG}")}
        assert scoped and all(v == "false" for v in scoped.values()), f"{statement['Sid']} is not scoped"


def test_creates_need_the_tag_in_the_request_and_changes_the_tag_on_the_resource():
    by_action: dict[str, list[str]] = {}
    for statement in POLICY["Statement"]:
        keys = list(statement.get("Condition", {}).get("Null", {}))
        for action in _actions(statement):
            by_action.setdefault(action, []).extend(keys or ["(none)"])
    for action in (
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:CreateTargetGroup",
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
    ):
        assert by_action[action] == [f"aws:RequestTag/{CLUSTER_TAG}"], action
    for action in (
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:ModifyTargetGroup",
        "elasticloadbalancing:ModifyTargetGroupAttributes",
        "elasticloadbalancing:SetSecurityGroups",
        "ec2:DeleteSecurityGroup",
    ):
        assert by_action[action] == [f"aws:ResourceTag/{CLUSTER_TAG}"], action
    # Tags on a load balancer or target group: at its creation (the create's own tags), or on one already ours.
    assert sorted(by_action["elasticloadbalancing:AddTags"]) == [
        f"aws:RequestTag/{CLUSTER_TAG}",
        f"aws:ResourceTag/{CLUSTER_TAG}",
    ]
    tag_on_create = next(s for s in POLICY["Statement"] if s["Sid"] == "TagOnCreate")
    assert tag_on_create["Condition"]["StringEquals"]["elasticloadbalancing:CreateAction"] == [
        "CreateLoadBalancer",
        "CreateTargetGroup",
    ]


def test_nothing_may_be_deleted_without_the_tag():
    for statement in POLICY["Statement"]:
        if any(a.split(":", 1)[1].startswith("Delete") for a in _actions(statement)) and statement["Sid"] not in (
            "ListenersAndRulesOfALoadBalancer",
        ):
            assert f"aws:ResourceTag/{CLUSTER_TAG}" in statement.get("Condition", {}).get("Null", {}), statement["Sid"]
