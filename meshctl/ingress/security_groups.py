"""Security groups the AWS Load Balancer Controller's way (its ``model_build_managed_sg.go`` and
``backend_sg_provider.go``): the EC2 half of a stack.

- A **managed frontend group** per load balancer opens each listen port (TCP) to the inbound CIDRs (default
  0.0.0.0/0). Every rule in it is ours: one added by hand is revoked, as LBC does (#3988).
- One **backend group** per cluster (and VPC), attached to every load balancer beside its frontend group: the
  source the targets' groups allow (meshctl/ingress/target_rules.py), so targets accept traffic from our load
  balancers and from nothing else.
- The ``security-groups`` annotation names the groups instead (IDs, or names looked up in the VPC): no managed
  group, and the backend group only with ``manage-backend-security-group-rules: "true"``.

Every group is created with its ownership tags in the same call (TagSpecifications), so a crash leaves nothing
untagged; rules are changed by difference only, so a second pass over an unchanged stack makes no call that
changes anything. A group still in use (``DependencyViolation``: AWS releases a deleted load balancer's network
interfaces some seconds later) is retried on a later pass, never forgotten."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError

from meshctl.ingress.inventory import ActualSecurityGroup, Inventory
from meshctl.ingress.naming import (
    BACKEND_SG_RESOURCE,
    CLUSTER_TAG,
    FRONTEND_SG_RESOURCE,
    RESOURCE_TAG,
    STACK_TAG,
    backend_security_group_name,
    security_group_name,
)
from meshctl.ingress.stack import SecurityGroups, Stack

__all__ = [
    "GroupInUse",
    "GroupNotFound",
    "Permission",
    "SecurityGroupDeployer",
    "listen_protocols",
    "permissions",
    "to_ip_permissions",
]

log = logging.getLogger(__name__)

# One inbound rule: (protocol, from port, to port, source kind, source, description). Source kinds: cidr, cidr6,
# group (a security group id), prefix (a prefix list id).
Permission = tuple[str, int, int, str, str, str | None]


class GroupInUse(Exception):
    """A group could not be deleted yet (DependencyViolation): try again on a later pass."""


class GroupNotFound(Exception):
    """A group the ``security-groups`` annotation names does not exist."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def permissions(ip_permissions: Iterable[dict[str, Any]]) -> set[Permission]:
    """EC2's IpPermissions as one tuple per source, the form two rule sets are compared in."""
    out: set[Permission] = set()
    for p in ip_permissions:
        protocol, low, high = str(p.get("IpProtocol")), int(p.get("FromPort", -1)), int(p.get("ToPort", -1))
        for r in p.get("IpRanges", []):
            out.add((protocol, low, high, "cidr", r["CidrIp"], r.get("Description")))
        for r in p.get("Ipv6Ranges", []):
            out.add((protocol, low, high, "cidr6", r["CidrIpv6"], r.get("Description")))
        for r in p.get("UserIdGroupPairs", []):
            out.add((protocol, low, high, "group", r["GroupId"], r.get("Description")))
        for r in p.get("PrefixListIds", []):
            out.add((protocol, low, high, "prefix", r["PrefixListId"], r.get("Description")))
    return out


_SOURCE = {
    "cidr": ("IpRanges", "CidrIp"),
    "cidr6": ("Ipv6Ranges", "CidrIpv6"),
    "group": ("UserIdGroupPairs", "GroupId"),
    "prefix": ("PrefixListIds", "PrefixListId"),
}


def to_ip_permissions(rules: Iterable[Permission]) -> list[dict[str, Any]]:
    out = []
    for protocol, low, high, kind, source, description in sorted(rules, key=str):
        field, key = _SOURCE[kind]
        entry: dict[str, Any] = {key: source}
        if description is not None:
            entry["Description"] = description
        out.append({"IpProtocol": protocol, "FromPort": low, "ToPort": high, field: [entry]})
    return out


def frontend_rules(
    ports: Iterable[tuple[int, str]], inbound: Iterable[str], prefix_lists: Iterable[str] = ()
) -> set[Permission]:
    """A rule for each listen (port, tcp|udp) and inbound CIDR or prefix list (LBC: one per port x source)."""
    sources = [("cidr6" if ipaddress.ip_network(c).version == 6 else "cidr", c) for c in inbound]
    sources += [("prefix", p) for p in prefix_lists]
    return {(protocol, port, port, kind, source, None) for kind, source in sources for port, protocol in ports}


def listen_protocols(protocol: str) -> tuple[str, ...]:
    """The IP protocols a listener's protocol takes (HTTP, HTTPS, TLS and TCP are TCP)."""
    return {"UDP": ("udp",), "TCP_UDP": ("tcp", "udp")}.get(protocol, ("tcp",))


def _tag_specification(tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"ResourceType": "security-group", "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}]


class SecurityGroupDeployer:
    def __init__(self, ec2: Any, cluster: str) -> None:
        self.ec2, self.cluster = ec2, cluster

    # --- what a load balancer gets ------------------------------------------------------------------------------

    def for_load_balancer(self, stack: Stack, vpc: str, inventory: Inventory) -> tuple[str, ...] | None:
        """The group ids ``stack``'s load balancer should have (made and their rules set as needed); None: it
        manages none (an NLB without security groups)."""
        balancer = stack.load_balancer
        assert balancer is not None
        wanted = balancer.security_groups
        if wanted is None:
            return None
        ids: list[str] = []
        if wanted.given:
            ids += self._given(wanted.given, vpc)
        else:
            ports = sorted({(li.port, p) for li in stack.listeners for p in listen_protocols(li.protocol)})
            ids.append(self._frontend(stack, wanted, ports, vpc, inventory))
        if wanted.backend:
            ids.append(self.backend(vpc, inventory).id)
        return tuple(ids)

    def _frontend(
        self, stack: Stack, wanted: SecurityGroups, ports: list[tuple[int, str]], vpc: str, inventory: Inventory
    ) -> str:
        rules = frontend_rules(ports, wanted.inbound, wanted.prefix_lists)
        found = next((g for g in inventory.security_groups.get(stack.id, ()) if g.vpc == vpc), None)
        if found is None:
            found = self._create(
                security_group_name(self.cluster, stack.id),
                "[k8s] Managed SecurityGroup for LoadBalancer",
                vpc,
                {CLUSTER_TAG: self.cluster, STACK_TAG: stack.id, RESOURCE_TAG: FRONTEND_SG_RESOURCE},
            )
            inventory.security_groups.setdefault(stack.id, []).append(found)
            log.info("stack %s: created security group %s (%s)", stack.id, found.name, found.id)
        self.set_rules(found, rules, owned=lambda _: True)
        return found.id

    def backend(self, vpc: str, inventory: Inventory) -> ActualSecurityGroup:
        """The cluster's backend group in ``vpc``, made on first use."""
        found = next((g for g in inventory.backend_groups if g.vpc == vpc), None)
        if found is None:
            found = self._create(
                backend_security_group_name(self.cluster),
                "[k8s] Shared Backend SecurityGroup for LoadBalancer",
                vpc,
                {CLUSTER_TAG: self.cluster, RESOURCE_TAG: BACKEND_SG_RESOURCE},
            )
            inventory.backend_groups.append(found)
            log.info("created the backend security group %s (%s)", found.name, found.id)
        return found

    def _given(self, given: tuple[str, ...], vpc: str) -> list[str]:
        """The ``security-groups`` annotation's groups as ids: ``sg-...`` as they are, names looked up in the VPC."""
        names = [g for g in given if not g.startswith("sg-")]
        found: dict[str, str] = {}
        if names:
            filters = [{"Name": "group-name", "Values": names}, {"Name": "vpc-id", "Values": [vpc]}]
            for g in self.ec2.describe_security_groups(Filters=filters)["SecurityGroups"]:
                found[g["GroupName"]] = g["GroupId"]
        missing = [n for n in names if n not in found]
        if missing:
            raise GroupNotFound(f"security-groups: no group named {', '.join(missing)} in {vpc}")
        return [g if g.startswith("sg-") else found[g] for g in given]

    def _create(self, name: str, description: str, vpc: str, tags: dict[str, str]) -> ActualSecurityGroup:
        created = self.ec2.create_security_group(
            GroupName=name, Description=description, VpcId=vpc, TagSpecifications=_tag_specification(tags)
        )
        return ActualSecurityGroup(id=created["GroupId"], name=name, vpc=vpc, permissions=[], tags=tags)

    # --- rules ------------------------------------------------------------------------------------------------

    def set_rules(
        self, group: ActualSecurityGroup, wanted: set[Permission], owned: Callable[[Permission], bool]
    ) -> None:
        """Make ``group``'s inbound rules hold ``wanted``; of the others, revoke those ``owned(rule)`` says are
        ours. Grant first, then revoke (a rule being replaced never leaves a gap)."""
        have = permissions(group.permissions)
        missing = wanted - have
        extra = {r for r in have - wanted if owned(r)}
        if missing:
            try:
                self.ec2.authorize_security_group_ingress(GroupId=group.id, IpPermissions=to_ip_permissions(missing))
            except ClientError as exc:
                if _code(exc) != "InvalidPermission.Duplicate":  # added meanwhile (a pass before a crash)
                    raise
        if extra:
            try:
                self.ec2.revoke_security_group_ingress(GroupId=group.id, IpPermissions=to_ip_permissions(extra))
            except ClientError as exc:
                if _code(exc) != "InvalidPermission.NotFound":
                    raise
        if missing or extra:
            group.permissions = to_ip_permissions((have - extra) | missing)

    # --- deleting ---------------------------------------------------------------------------------------------

    def delete(self, group: ActualSecurityGroup) -> None:
        """Deletes ``group``; still in use: GroupInUse (a later pass tries again); already gone: done."""
        try:
            self.ec2.delete_security_group(GroupId=group.id)
        except ClientError as exc:
            code = _code(exc)
            if code == "DependencyViolation":
                raise GroupInUse(f"security group {group.name} ({group.id}) is still in use; retrying") from exc
            if code != "InvalidGroup.NotFound":
                raise
        log.info("deleted security group %s (%s)", group.name, group.id)
