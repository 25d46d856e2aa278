"""Rules on the targets' security groups, LBC's way (its ``networking_manager.go``): the security group of every
target's network interface allows TCP from the cluster's backend group (which every load balancer of ours carries)
on the target ports, so targets accept traffic from our load balancers.

- **Which interface**: ip targets by their address (DescribeNetworkInterfaces, ``addresses.private-ip-address``, 199
  addresses a call), or, for a pod with security groups of its own (the VPC CNI's ``vpc.amazonaws.com/pod-eni``),
  its branch interface by id; instance targets by the instance's primary interface (DescribeInstances).
- **Which of its groups**: its only group; else the one group tagged ``kubernetes.io/cluster/<cluster>`` (LBC's
  rule; none or several is an error on the owning object, and that interface gets no rule).
- **Which rules**: one per group and protocol (TCP; UDP for an NLB's UDP targets), from the backend group, over
  the lowest to the highest port its targets need (target and numeric health-check ports), described
  ``elbv2.meshctl.dev/targetGroupBinding=shared``. Only rules with that description are ever revoked: a group's
  other rules are the user's.
- **Restart safety**: rules are revoked only in a pass that resolved every target (a pass that could not see them
  all only adds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from meshctl.ingress.inventory import ActualSecurityGroup
from meshctl.ingress.naming import TARGET_RULE_MARKER
from meshctl.ingress.security_groups import Permission, SecurityGroupDeployer
from meshctl.model import ObjectKey

__all__ = ["TargetNeed", "TargetRules", "revoke_all"]

log = logging.getLogger(__name__)
_CHUNK = 199  # addresses per DescribeNetworkInterfaces filter (LBC's chunk)


@dataclass(frozen=True)
class TargetNeed:
    """What one target group asks of its targets' groups."""

    owner: ObjectKey  # the Ingress or Service, for errors
    target_type: str  # ip | instance
    targets: frozenset[tuple[str, int]]  # (ip or instance id, port)
    health_port: int | None  # a numeric health-check port other than the traffic port
    protocols: tuple[str, ...] = ("tcp",)  # udp for an NLB's UDP target group (health checks are TCP)
    branch_enis: tuple[tuple[str, str], ...] = ()  # (address, its pod's branch interface): security groups for pods


@dataclass
class _Resolved:
    groups: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (group, protocol) -> port range
    problems: list[tuple[ObjectKey, str]] = field(default_factory=list)
    complete: bool = True  # every target resolved


class TargetRules:
    def __init__(self, ec2: Any, cluster: str, groups: SecurityGroupDeployer) -> None:
        self.ec2, self.cluster, self.groups = ec2, cluster, groups
        self._tag = f"kubernetes.io/cluster/{cluster}"

    def apply(self, backend: str, needs: Iterable[TargetNeed]) -> list[tuple[ObjectKey, str]]:
        """Makes the targets' groups allow ``backend`` as ``needs`` say; returns the problems (owner, message)."""
        resolved = self._resolve(list(needs))
        wanted: dict[str, set[Permission]] = {}
        for (group_id, protocol), (low, high) in resolved.groups.items():
            wanted.setdefault(group_id, set()).add((protocol, low, high, "group", backend, TARGET_RULE_MARKER))
        for group in self._groups_allowing(backend, set(wanted)):
            rules = wanted.get(group.id, set())
            owned = _ours(backend) if resolved.complete else (lambda _: False)  # incomplete: only add
            self.groups.set_rules(group, rules, owned=owned)
        return resolved.problems

    def _groups_allowing(self, backend: str, also: set[str]) -> list[ActualSecurityGroup]:
        """The groups that hold a rule from ``backend`` now, and ``also``: the ones to look at."""
        found = {g.id: g for g in _allowing(self.ec2, backend)}
        missing = sorted(also - set(found))
        if missing:
            described = self.ec2.describe_security_groups(GroupIds=missing)["SecurityGroups"]
            found.update((g.id, g) for g in map(ActualSecurityGroup.described, described))
        return list(found.values())

    def _resolve(self, needs: list[TargetNeed]) -> _Resolved:
        out = _Resolved()
        by_address: dict[str, list[tuple[TargetNeed, int]]] = {}
        by_instance: dict[str, list[tuple[TargetNeed, int]]] = {}
        for need in needs:
            for target, port in need.targets:
                into = by_address if need.target_type == "ip" else by_instance
                into.setdefault(target, []).append((need, port))
        interfaces: dict[str, list[str]] = {}  # target (address or instance id) -> its interface's groups
        branches = {address: eni for need in needs for address, eni in need.branch_enis if address in by_address}
        eni_ids = sorted(set(branches.values()))
        for start in range(0, len(eni_ids), _CHUNK):
            ids = eni_ids[start : start + _CHUNK]
            found = self.ec2.describe_network_interfaces(Filters=[{"Name": "network-interface-id", "Values": ids}])
            groups_of = {
                eni["NetworkInterfaceId"]: [g["GroupId"] for g in eni.get("Groups", [])]
                for eni in found["NetworkInterfaces"]
            }
            interfaces.update((a, groups_of[e]) for a, e in branches.items() if e in groups_of)
        addresses = sorted(a for a in by_address if a not in branches)
        for start in range(0, len(addresses), _CHUNK):
            chunk = addresses[start : start + _CHUNK]
            filters = [{"Name": "addresses.private-ip-address", "Values": chunk}]
            for eni in self.ec2.describe_network_interfaces(Filters=filters)["NetworkInterfaces"]:
                for address in eni.get("PrivateIpAddresses", []):
                    interfaces[address["PrivateIpAddress"]] = [g["GroupId"] for g in eni.get("Groups", [])]
        if by_instance:
            reservations = self.ec2.describe_instances(InstanceIds=sorted(by_instance))["Reservations"]
            for instance in (i for r in reservations for i in r["Instances"]):
                primary = [n for n in instance.get("NetworkInterfaces", []) if n["Attachment"]["DeviceIndex"] == 0]
                if primary:
                    interfaces[instance["InstanceId"]] = [g["GroupId"] for g in primary[0].get("Groups", [])]
        tagged = self._cluster_tagged({g for found in interfaces.values() if len(found) > 1 for g in found})
        # One problem per owner and cause, naming a few targets: 100 pods without an interface are one Event.
        unresolved: dict[tuple[ObjectKey, str], list[str]] = {}
        for target, uses in {**by_address, **by_instance}.items():
            owner = uses[0][0].owner
            groups = interfaces.get(target)
            if groups is None:
                out.complete = False
                unresolved.setdefault((owner, "no network interface found: no rule allows them"), []).append(target)
                continue
            chosen = groups if len(groups) == 1 else [g for g in groups if g in tagged]
            if len(chosen) != 1:
                out.complete = False
                why = (
                    f"expected exactly one of its security groups ({', '.join(groups)}) tagged {self._tag}, "
                    f"found {len(chosen)}"
                )
                unresolved.setdefault((owner, why), []).append(target)
                continue
            for need, port in uses:
                wanted_ports = [(port, p) for p in need.protocols]
                if need.health_port is not None:
                    wanted_ports.append((need.health_port, "tcp"))
                for number, protocol in wanted_ports:
                    low, high = out.groups.get((chosen[0], protocol), (number, number))
                    out.groups[(chosen[0], protocol)] = (min(low, number), max(high, number))
        for (owner, why), targets in sorted(unresolved.items(), key=str):
            shown = ", ".join(sorted(targets)[:3]) + (f" and {len(targets) - 3} more" if len(targets) > 3 else "")
            out.problems.append((owner, f"targets {shown}: {why}"))
        return out

    def _cluster_tagged(self, group_ids: set[str]) -> set[str]:
        if not group_ids:
            return set()
        described = self.ec2.describe_security_groups(GroupIds=sorted(group_ids))["SecurityGroups"]
        return {g["GroupId"] for g in described if any(t["Key"] == self._tag for t in g.get("Tags", []))}


def _ours(backend: str) -> Callable[[Permission], bool]:
    def owned(rule: Permission) -> bool:
        return rule[3] == "group" and rule[4] == backend and rule[5] == TARGET_RULE_MARKER

    return owned


def _allowing(ec2: Any, backend: str) -> list[ActualSecurityGroup]:
    """The groups holding a rule from ``backend``."""
    filters = [{"Name": "ip-permission.group-id", "Values": [backend]}]
    return [ActualSecurityGroup.described(g) for g in ec2.describe_security_groups(Filters=filters)["SecurityGroups"]]


def revoke_all(ec2: Any, groups: SecurityGroupDeployer, backend: str) -> None:
    """Every rule of ours that allows ``backend`` (before the backend group itself is deleted)."""
    for group in _allowing(ec2, backend):
        groups.set_rules(group, set(), owned=_ours(backend))
