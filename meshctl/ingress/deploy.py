"""Makes AWS match one desired stack: the thin, boto3 half of the reconciler.

Order (LBC's ``stack_deployer.go``): target groups, then the load balancer, listeners and rules; what is no longer
wanted goes last and in reverse (an old load balancer first, which takes its listeners and rules with it, then
unused target groups, which a rule may have referenced until the rules changed). Rules are changed in place by
priority, and new ones created before old ones are deleted, so a request always finds a rule.

Security groups (meshctl/ingress/security_groups.py) come before the load balancer that uses them and go after it:
a load balancer gets its groups when created, or SetSecurityGroups when they differ; a managed group no longer used
is deleted once its load balancer is gone (DependencyViolation: on a later pass).

Every create carries the ownership tags in the same call, so a crash between two calls leaves nothing untagged:
the next pass finds it by tag and carries on. Deleting something already gone counts as done. Changes to an
immutable setting (scheme, target type, protocol, port) get a new name: create the new one, then delete the old."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from meshctl.ingress.inventory import ActualLoadBalancer, ActualTargetGroup, Inventory
from meshctl.ingress.naming import CLUSTER_TAG, RESOURCE_TAG, STACK_TAG
from meshctl.ingress.security_groups import GroupInUse, GroupNotFound, SecurityGroupDeployer
from meshctl.ingress.stack import (
    Action,
    Condition,
    FixedResponse,
    Forward,
    Listener,
    LoadBalancer,
    Redirect,
    Rule,
    Stack,
    TargetGroup,
    Transform,
)

__all__ = ["DeployError", "Deployed", "StackDeployer", "Subnets"]

log = logging.getLogger(__name__)


class DeployError(Exception):
    """A stack could not be made to match (the message is for users: it ends up in `meshctl get ingresses`)."""


@dataclass
class Deployed:
    load_balancer_arn: str | None = None
    dns_name: str | None = None
    target_groups: dict[str, str] = field(default_factory=dict)  # resource id -> ARN
    listeners: dict[int, str] = field(default_factory=dict)  # port -> ARN
    security_groups: tuple[str, ...] = ()  # the load balancer's
    backend_group: str | None = None  # the cluster's backend group, when the load balancer carries it


@dataclass
class Subnets:
    """Where load balancers go: given (``--ingress-subnets``), else discovered the LBC way, by the subnet role tags
    ``kubernetes.io/role/elb`` (internet-facing) and ``kubernetes.io/role/internal-elb`` (internal), one per zone."""

    ec2: Any
    vpc_id: str | None = None
    given: tuple[str, ...] = ()
    _found: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def for_scheme(self, scheme: str) -> tuple[str, ...]:
        if self.given:
            return self.given
        if scheme not in self._found:
            role = "kubernetes.io/role/elb" if scheme == "internet-facing" else "kubernetes.io/role/internal-elb"
            filters = [{"Name": "tag-key", "Values": [role]}]
            if self.vpc_id:
                filters.append({"Name": "vpc-id", "Values": [self.vpc_id]})
            by_zone: dict[str, str] = {}
            for subnet in sorted(self.ec2.describe_subnets(Filters=filters)["Subnets"], key=lambda s: s["SubnetId"]):
                by_zone.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
            self._found[scheme] = tuple(by_zone[z] for z in sorted(by_zone))
        if not self._found[scheme]:
            raise DeployError(f"no subnets tagged for {scheme} load balancers; tag them or pass --ingress-subnets")
        return self._found[scheme]

    def vpc(self, scheme: str) -> str:
        if self.vpc_id is None:
            subnet = self.for_scheme(scheme)[0]
            self.vpc_id = self.ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
        assert self.vpc_id is not None
        return self.vpc_id


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


class StackDeployer:
    def __init__(self, elbv2: Any, subnets: Subnets, cluster: str, ec2: Any = None) -> None:
        """``ec2``: manage security groups with it (None: none are managed)."""
        self.elbv2, self.subnets, self.cluster = elbv2, subnets, cluster
        self.groups = SecurityGroupDeployer(ec2, cluster) if ec2 is not None else None

    def _ownership(self, stack: Stack, resource_id: str) -> dict[str, str]:
        return {CLUSTER_TAG: self.cluster, STACK_TAG: stack.id, RESOURCE_TAG: resource_id}

    # --- the whole stack ---------------------------------------------------------------------------------------

    def deploy(self, stack: Stack, inventory: Inventory) -> Deployed:
        """Creates, changes and deletes what it takes; a stack without a load balancer deletes all it owns."""
        result = Deployed()
        actual_groups = list(inventory.target_groups.get(stack.id, ()))
        actual_balancers = list(inventory.load_balancers.get(stack.id, ()))
        keep_groups: set[str] = set()
        for wanted in stack.target_groups:
            actual = self._target_group(stack, wanted, actual_groups)
            result.target_groups[wanted.resource_id] = actual
            keep_groups.add(actual)
        stale_balancers = actual_balancers
        groups: tuple[str, ...] | None = None
        if stack.load_balancer is not None:
            groups = self._security_groups(stack, inventory)
            balancer = self._load_balancer(stack, actual_balancers, groups)
            result.load_balancer_arn, result.dns_name = balancer.arn, balancer.dns_name
            result.security_groups = groups or ()
            if groups and stack.load_balancer.security_groups and stack.load_balancer.security_groups.backend:
                result.backend_group = next((g.id for g in inventory.backend_groups if g.id in groups), None)
            stale_balancers = [b for b in actual_balancers if b.arn != balancer.arn]
            result.listeners = self._listeners(stack, balancer.arn, result.target_groups)
        for old in stale_balancers:
            self._delete_load_balancer(old)
            log.info("stack %s: deleted load balancer %s", stack.id, old.name)
        for group in actual_groups:
            if group.arn not in keep_groups:
                self._delete("delete_target_group", "TargetGroupNotFound", TargetGroupArn=group.arn)
                log.info("stack %s: deleted target group %s", stack.id, group.name)
        self._delete_security_groups(stack, inventory, keep=set(groups or ()))
        return result

    def _security_groups(self, stack: Stack, inventory: Inventory) -> tuple[str, ...] | None:
        wanted = stack.load_balancer
        assert wanted is not None
        if self.groups is None or wanted.security_groups is None:
            return None
        if wanted.type == "network":
            found = self._matching(wanted, inventory.load_balancers.get(stack.id, []))
            if found is not None and not found.security_groups:
                return None  # an NLB made without security groups cannot get any (AWS): it keeps none
        try:
            return self.groups.for_load_balancer(stack, self.subnets.vpc(wanted.scheme), inventory)
        except GroupNotFound as exc:
            raise DeployError(str(exc)) from None

    def _delete_security_groups(self, stack: Stack, inventory: Inventory, keep: set[str]) -> None:
        """The stack's managed groups it no longer uses (all of them once its load balancer is gone)."""
        if self.groups is None:
            return
        owned = inventory.security_groups.get(stack.id, [])
        for group in [g for g in owned if g.id not in keep]:
            try:
                self.groups.delete(group)
            except GroupInUse as exc:
                raise DeployError(str(exc)) from None
            owned.remove(group)

    def _create(self, operation: str, taken_code: str, taken: str, **arguments: Any) -> Any:
        """A create whose name is already used: by a resource of ours the inventory would have matched, so by one
        we do not own (or another cluster's) -- say so instead of AWS's bare error."""
        try:
            return getattr(self.elbv2, operation)(**arguments)
        except ClientError as exc:
            if _code(exc) == taken_code:
                raise DeployError(taken) from exc
            raise

    def _delete(self, operation: str, gone_code: str, **arguments: Any) -> None:
        try:
            getattr(self.elbv2, operation)(**arguments)
        except ClientError as exc:
            if _code(exc) != gone_code:
                raise

    # --- target groups -----------------------------------------------------------------------------------------

    def _target_group(self, stack: Stack, wanted: TargetGroup, actual: list[ActualTargetGroup]) -> str:
        """The ARN of the group matching ``wanted`` (same resource id and name), created or updated as needed."""
        found = next((g for g in actual if g.resource_id == wanted.resource_id and g.name == wanted.name), None)
        hc = wanted.health_check
        health: dict[str, Any] = {
            "HealthCheckProtocol": hc.protocol,
            "HealthCheckPort": hc.port,
            "HealthCheckIntervalSeconds": hc.interval_seconds,
            "HealthCheckTimeoutSeconds": hc.timeout_seconds,
            "HealthyThresholdCount": hc.healthy_threshold,
            "UnhealthyThresholdCount": hc.unhealthy_threshold,
        }
        if hc.path is not None:
            health["HealthCheckPath"] = hc.path
        if hc.success_codes is not None:
            health["Matcher"] = {hc.matcher: hc.success_codes}
        tags = {**dict(wanted.tags), **self._ownership(stack, wanted.resource_id)}
        if found is None:
            created = self._create(
                "create_target_group",
                "DuplicateTargetGroupName",
                f"target group name {wanted.name} is taken by a group this cluster does not own",
                Name=wanted.name,
                Protocol=wanted.protocol,
                **({"ProtocolVersion": wanted.protocol_version} if wanted.protocol_version else {}),
                Port=wanted.port,
                VpcId=self.subnets.vpc(stack.load_balancer.scheme if stack.load_balancer else "internal"),
                TargetType=wanted.target_type,
                HealthCheckEnabled=True,
                Tags=_tag_list(tags),
                **health,
            )["TargetGroups"][0]
            arn = str(created["TargetGroupArn"])
            log.info("stack %s: created target group %s", stack.id, wanted.name)
            self._attributes(arn, wanted.attributes, {})
            return arn
        desc = found.description
        current = {k: desc.get(k) for k in health}
        if current != health:
            self.elbv2.modify_target_group(TargetGroupArn=found.arn, **health)
        if wanted.attributes:
            have = self.elbv2.describe_target_group_attributes(TargetGroupArn=found.arn)["Attributes"]
            self._attributes(found.arn, wanted.attributes, {a["Key"]: a["Value"] for a in have})
        self._tags(found.arn, tags, found.tags)
        return found.arn

    def _attributes(self, arn: str, wanted: tuple[tuple[str, str], ...], have: dict[str, str]) -> None:
        changes = [{"Key": k, "Value": v} for k, v in wanted if have.get(k) != v]
        if changes:
            self.elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=changes)

    def _tags(self, arn: str, wanted: dict[str, str], have: dict[str, str]) -> None:
        missing = {k: v for k, v in wanted.items() if have.get(k) != v}
        if missing:
            self.elbv2.add_tags(ResourceArns=[arn], Tags=_tag_list(missing))

    # --- the load balancer -------------------------------------------------------------------------------------

    @staticmethod
    def _matching(wanted: LoadBalancer, actual: list[ActualLoadBalancer]) -> ActualLoadBalancer | None:
        """The load balancer of ours that is ``wanted`` (same scheme and type; anything else is replaced)."""
        return next((b for b in actual if b.scheme == wanted.scheme and b.type == wanted.type), None)

    def _load_balancer(
        self, stack: Stack, actual: list[ActualLoadBalancer], groups: tuple[str, ...] | None
    ) -> ActualLoadBalancer:
        """``groups``: its security groups (None: leave them as they are)."""
        wanted = stack.load_balancer
        assert wanted is not None
        found = self._matching(wanted, actual)
        tags = {**dict(wanted.tags), **self._ownership(stack, "LoadBalancer")}
        if found is not None:
            self._tags(found.arn, tags, found.tags)
            if groups is not None and set(found.security_groups) != set(groups):
                self.elbv2.set_security_groups(LoadBalancerArn=found.arn, SecurityGroups=list(groups))
                found.security_groups = groups
                log.info("stack %s: load balancer %s security groups %s", stack.id, found.name, ", ".join(groups))
            if found.ip_address_type != wanted.ip_address_type:
                self.elbv2.set_ip_address_type(LoadBalancerArn=found.arn, IpAddressType=wanted.ip_address_type)
                found.ip_address_type = wanted.ip_address_type
            self._balancer_attributes(found.arn, wanted)
            return found
        for old in list(actual):  # a replacement keeping the name (load-balancer-name set): the old one goes first
            if old.name == wanted.name:
                self._delete_load_balancer(old)
                actual.remove(old)  # gone: not stale any more
        created = self._create(
            "create_load_balancer",
            "DuplicateLoadBalancerName",
            f"load balancer name {wanted.name} is taken by one this cluster does not own",
            Name=wanted.name,
            Subnets=list(wanted.subnets or self.subnets.for_scheme(wanted.scheme)),
            Scheme=wanted.scheme,
            Type=wanted.type,
            Tags=_tag_list(tags),
            IpAddressType=wanted.ip_address_type,
            **({"SecurityGroups": list(groups)} if groups is not None else {}),
        )["LoadBalancers"][0]
        log.info("stack %s: created %s load balancer %s", stack.id, wanted.type, wanted.name)
        self._balancer_attributes(created["LoadBalancerArn"], wanted)
        return ActualLoadBalancer(
            arn=created["LoadBalancerArn"],
            name=created["LoadBalancerName"],
            dns_name=created.get("DNSName", ""),
            scheme=wanted.scheme,
            type=wanted.type,
            tags=tags,
            security_groups=groups or (),
            ip_address_type=wanted.ip_address_type,
        )

    def _balancer_attributes(self, arn: str, wanted: LoadBalancer) -> None:
        """The keys ``load-balancer-attributes`` names, set where they differ (one removed from it keeps its
        value, as in LBC)."""
        if not wanted.attributes:
            return
        have = {
            a["Key"]: a["Value"]
            for a in self.elbv2.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
        }
        changes = [{"Key": k, "Value": v} for k, v in wanted.attributes if have.get(k) != v]
        if changes:
            self.elbv2.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=changes)

    def _delete_load_balancer(self, balancer: ActualLoadBalancer) -> None:
        """Deletes ``balancer`` unless its deletion protection is on: meshctl honours it itself (moto ignores it),
        and the Ingress or Service keeps its finalizer until it is turned off."""
        try:
            described = self.elbv2.describe_load_balancer_attributes(LoadBalancerArn=balancer.arn)["Attributes"]
        except ClientError as exc:
            if _code(exc) == "LoadBalancerNotFound":
                return
            raise
        if any(a["Key"] == "deletion_protection.enabled" and a["Value"] == "true" for a in described):
            raise DeployError(
                f"load balancer {balancer.name} has deletion protection on (deletion_protection.enabled=true): "
                "turn it off (in AWS, or in load-balancer-attributes before deleting) to let it be deleted"
            )
        self._delete("delete_load_balancer", "LoadBalancerNotFound", LoadBalancerArn=balancer.arn)

    # --- listeners and rules -----------------------------------------------------------------------------------

    def _listeners(self, stack: Stack, balancer_arn: str, groups: dict[str, str]) -> dict[int, str]:
        actual = {
            int(li["Port"]): li for li in self.elbv2.describe_listeners(LoadBalancerArn=balancer_arn)["Listeners"]
        }
        arns: dict[int, str] = {}
        for wanted in stack.listeners:
            current = actual.get(wanted.port)
            settings = self._listener_settings(wanted, groups)
            if current is None:
                arn = self.elbv2.create_listener(LoadBalancerArn=balancer_arn, Port=wanted.port, **settings)[
                    "Listeners"
                ][0]["ListenerArn"]
            else:
                arn = current["ListenerArn"]
                if _listener_key(current) != _listener_key({**settings, "Port": wanted.port}):
                    self.elbv2.modify_listener(ListenerArn=arn, Port=wanted.port, **settings)
            arns[wanted.port] = arn
            self._extra_certificates(arn, wanted)
            if stack.load_balancer is not None and stack.load_balancer.type == "application":
                self._rules(arn, [r for r in stack.rules if r.listener_port == wanted.port], groups)
        for port, current in actual.items():
            if port not in arns:
                self._delete("delete_listener", "ListenerNotFound", ListenerArn=current["ListenerArn"])
        return arns

    def _listener_settings(self, wanted: Listener, groups: dict[str, str]) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "Protocol": wanted.protocol,
            "DefaultActions": [_action(wanted.default_action, groups)],
        }
        if wanted.certificates:
            settings["Certificates"] = [{"CertificateArn": wanted.certificates[0]}]
        if wanted.ssl_policy:
            settings["SslPolicy"] = wanted.ssl_policy
        return settings

    def _extra_certificates(self, listener_arn: str, wanted: Listener) -> None:
        """Certificates after the first go on the listener's SNI list."""
        extra = set(wanted.certificates[1:])
        if not extra and wanted.protocol not in ("HTTPS", "TLS"):
            return
        listed = self.elbv2.describe_listener_certificates(ListenerArn=listener_arn)["Certificates"]
        have = {c["CertificateArn"] for c in listed if not c.get("IsDefault")}
        if extra - have:
            self.elbv2.add_listener_certificates(
                ListenerArn=listener_arn, Certificates=[{"CertificateArn": c} for c in sorted(extra - have)]
            )
        if have - extra:
            self.elbv2.remove_listener_certificates(
                ListenerArn=listener_arn, Certificates=[{"CertificateArn": c} for c in sorted(have - extra)]
            )

    def _rules(self, listener_arn: str, wanted: list[Rule], groups: dict[str, str]) -> None:
        actual = {
            int(r["Priority"]): r
            for r in self.elbv2.describe_rules(ListenerArn=listener_arn)["Rules"]
            if not r.get("IsDefault")
        }
        for rule in wanted:
            conditions = [_condition(c) for c in rule.conditions]
            actions = [_action(rule.action, groups)]
            transforms = [_transform(t) for t in rule.transforms]
            extra: dict[str, Any] = {"Transforms": transforms} if transforms else {}
            current = actual.get(rule.priority)
            if current is None:
                self.elbv2.create_rule(
                    ListenerArn=listener_arn, Priority=rule.priority, Conditions=conditions, Actions=actions, **extra
                )
                continue
            wanted_key = _rule_key({"Conditions": conditions, "Actions": actions, "Transforms": transforms})
            if _rule_key(current) != wanted_key:
                if not transforms and current.get("Transforms"):
                    extra = {"ResetTransforms": True}  # (an empty Transforms list is refused)
                self.elbv2.modify_rule(RuleArn=current["RuleArn"], Conditions=conditions, Actions=actions, **extra)
        priorities = {r.priority for r in wanted}
        for priority, current in sorted(actual.items()):
            if priority not in priorities:
                self._delete("delete_rule", "RuleNotFound", RuleArn=current["RuleArn"])


# The plain "Values" form allows one value; the per-field config form allows several (a Prefix path needs two).
_CONDITION_CONFIG = {
    "host-header": "HostHeaderConfig",
    "path-pattern": "PathPatternConfig",
    "http-header": "HttpHeaderConfig",
    "http-request-method": "HttpRequestMethodConfig",
    "query-string": "QueryStringConfig",
    "source-ip": "SourceIpConfig",
}


def _condition(c: Condition) -> dict[str, Any]:
    if c.field == "query-string":
        values: list[Any] = [{"Key": k, "Value": v} if k is not None else {"Value": v} for k, v in c.pairs]
        return {"Field": c.field, "QueryStringConfig": {"Values": values}}
    config: dict[str, Any] = {"Values": list(c.values)}
    if c.field == "http-header":
        config["HttpHeaderName"] = c.header
    return {"Field": c.field, _CONDITION_CONFIG[c.field]: config}


def _action(action: Action, groups: dict[str, str]) -> dict[str, Any]:
    if isinstance(action, Forward):
        targets = [(groups.get(ref, ref), weight) for ref, weight in action.targets]
        if len(targets) == 1:
            return {"Type": "forward", "TargetGroupArn": targets[0][0]}
        return {
            "Type": "forward",
            "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in targets]},
        }
    if isinstance(action, Redirect):
        return {
            "Type": "redirect",
            "RedirectConfig": {
                "Protocol": action.protocol,
                "Port": action.port,
                "Host": action.host,
                "Path": action.path,
                "Query": action.query,
                "StatusCode": action.status_code,
            },
        }
    assert isinstance(action, FixedResponse)
    config = {"StatusCode": action.status_code}
    if action.content_type:
        config["ContentType"] = action.content_type
    if action.message_body:
        config["MessageBody"] = action.message_body
    return {"Type": "fixed-response", "FixedResponseConfig": config}


def _action_key(action: dict[str, Any]) -> tuple[Any, ...]:
    """One form for an action as we send it and as AWS describes it (which fills in defaults and both forward forms)."""
    kind = action.get("Type")
    if kind == "forward":
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
        if groups:
            return ("forward", tuple(sorted((g["TargetGroupArn"], int(g.get("Weight", 1))) for g in groups)))
        return ("forward", ((action.get("TargetGroupArn"), 1),))
    if kind == "redirect":
        config = action.get("RedirectConfig") or {}
        return ("redirect", tuple(sorted((k, str(v)) for k, v in config.items())))
    config = action.get("FixedResponseConfig") or {}
    return ("fixed-response", tuple(sorted((k, str(v)) for k, v in config.items() if v)))


def _transform(t: Transform) -> dict[str, Any]:
    kind, rewrites = t
    config = "HostHeaderRewriteConfig" if kind == "host-header-rewrite" else "UrlRewriteConfig"
    return {"Type": kind, config: {"Rewrites": [{"Regex": r, "Replace": s} for r, s in rewrites]}}


def _transform_key(t: dict[str, Any]) -> tuple[Any, ...]:
    config = t.get("HostHeaderRewriteConfig") or t.get("UrlRewriteConfig") or {}
    return (t.get("Type"), tuple((r.get("Regex"), r.get("Replace")) for r in config.get("Rewrites", [])))


def _rule_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    conditions = []
    for c in rule.get("Conditions", []):
        field_name = c.get("Field")
        config = c.get(_CONDITION_CONFIG.get(field_name, ""), {}) or {}
        values = c.get("Values") or config.get("Values") or []
        if field_name == "query-string":
            values = [f"{v.get('Key')}={v.get('Value')}" for v in values]
        conditions.append((field_name, config.get("HttpHeaderName"), tuple(sorted(str(v) for v in values))))
    transforms = tuple(sorted((_transform_key(t) for t in rule.get("Transforms") or []), key=str))
    return tuple(sorted(conditions, key=str)), tuple(_action_key(a) for a in rule.get("Actions", [])), transforms


def _listener_key(listener: dict[str, Any]) -> tuple[Any, ...]:
    certificates = listener.get("Certificates") or []
    return (
        int(listener["Port"]),
        listener.get("Protocol"),
        certificates[0]["CertificateArn"] if certificates else None,
        listener.get("SslPolicy") if certificates else None,
        tuple(_action_key(a) for a in listener.get("DefaultActions", [])),
    )
