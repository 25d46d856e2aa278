"""Actual state: the load balancers, target groups and security groups this cluster owns, found by their ownership
tags.

Read once per reconcile pass (DescribeLoadBalancers / DescribeTargetGroups, then DescribeTags in chunks of 20, the
AWS maximum; DescribeSecurityGroups filtered by our cluster tag). Anything without our cluster tag, or tagged for
another cluster, never enters the inventory, so no code path can modify or delete it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from meshctl.ingress.naming import BACKEND_SG_RESOURCE, CLUSTER_TAG, RESOURCE_TAG, STACK_TAG

__all__ = ["ActualLoadBalancer", "ActualSecurityGroup", "ActualTargetGroup", "Inventory", "read_inventory"]

_TAG_CHUNK = 20


@dataclass
class ActualLoadBalancer:
    arn: str
    name: str
    dns_name: str
    scheme: str
    type: str
    tags: dict[str, str]
    security_groups: tuple[str, ...] = ()
    ip_address_type: str = "ipv4"


@dataclass
class ActualSecurityGroup:
    id: str
    name: str
    vpc: str
    permissions: list[dict[str, Any]]  # its IpPermissions (inbound rules)
    tags: dict[str, str]

    @classmethod
    def described(cls, g: dict[str, Any]) -> ActualSecurityGroup:
        """From a DescribeSecurityGroups entry."""
        tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
        return cls(
            id=g["GroupId"], name=g["GroupName"], vpc=g.get("VpcId", ""), permissions=g["IpPermissions"], tags=tags
        )


@dataclass
class ActualTargetGroup:
    arn: str
    name: str
    description: dict[str, Any]  # the DescribeTargetGroups entry
    tags: dict[str, str]

    @property
    def resource_id(self) -> str:
        return self.tags.get(RESOURCE_TAG, "")


@dataclass
class Inventory:
    load_balancers: dict[str, list[ActualLoadBalancer]] = field(default_factory=dict)  # by stack id
    target_groups: dict[str, list[ActualTargetGroup]] = field(default_factory=dict)
    security_groups: dict[str, list[ActualSecurityGroup]] = field(default_factory=dict)  # managed frontend groups
    backend_groups: list[ActualSecurityGroup] = field(default_factory=list)  # the cluster's (one per VPC)

    def stacks(self) -> set[str]:
        return set(self.load_balancers) | set(self.target_groups) | set(self.security_groups)


def _pages(elbv2: Any, operation: str, key: str) -> Iterator[dict[str, Any]]:
    for page in elbv2.get_paginator(operation).paginate():
        yield from page[key]


def _tags(elbv2: Any, arns: list[str]) -> dict[str, dict[str, str]]:
    tags: dict[str, dict[str, str]] = {}
    for start in range(0, len(arns), _TAG_CHUNK):
        described = elbv2.describe_tags(ResourceArns=arns[start : start + _TAG_CHUNK])
        for entry in described["TagDescriptions"]:
            tags[entry["ResourceArn"]] = {t["Key"]: t["Value"] for t in entry.get("Tags", [])}
    return tags


def read_inventory(elbv2: Any, cluster: str, ec2: Any = None) -> Inventory:
    inventory = Inventory()
    balancers = list(_pages(elbv2, "describe_load_balancers", "LoadBalancers"))
    tags = _tags(elbv2, [b["LoadBalancerArn"] for b in balancers])
    for b in balancers:
        t = tags.get(b["LoadBalancerArn"], {})
        if t.get(CLUSTER_TAG) == cluster and STACK_TAG in t:
            inventory.load_balancers.setdefault(t[STACK_TAG], []).append(
                ActualLoadBalancer(
                    arn=b["LoadBalancerArn"],
                    name=b["LoadBalancerName"],
                    dns_name=b.get("DNSName", ""),
                    scheme=b.get("Scheme", ""),
                    type=b.get("Type", ""),
                    tags=t,
                    security_groups=tuple(b.get("SecurityGroups") or ()),
                    ip_address_type=b.get("IpAddressType") or "ipv4",
                )
            )
    groups = list(_pages(elbv2, "describe_target_groups", "TargetGroups"))
    tags = _tags(elbv2, [g["TargetGroupArn"] for g in groups])
    for g in groups:
        t = tags.get(g["TargetGroupArn"], {})
        if t.get(CLUSTER_TAG) == cluster and STACK_TAG in t:
            inventory.target_groups.setdefault(t[STACK_TAG], []).append(
                ActualTargetGroup(arn=g["TargetGroupArn"], name=g["TargetGroupName"], description=g, tags=t)
            )
    if ec2 is not None:
        filters = [{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]}]
        for page in ec2.get_paginator("describe_security_groups").paginate(Filters=filters):
            for group in map(ActualSecurityGroup.described, page["SecurityGroups"]):
                if group.tags.get(RESOURCE_TAG) == BACKEND_SG_RESOURCE:
                    inventory.backend_groups.append(group)
                elif STACK_TAG in group.tags:
                    inventory.security_groups.setdefault(group.tags[STACK_TAG], []).append(group)
    return inventory
