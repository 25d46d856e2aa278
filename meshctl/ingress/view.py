"""What `meshctl get ingresses` shows of one stack: the load balancer, listeners, rules and target groups, with
registered/healthy counts and the last error. JSON-ready dicts (the admin API serves them as they are)."""

from __future__ import annotations

from typing import Any

from meshctl.ingress.deploy import Deployed
from meshctl.ingress.stack import Action, FixedResponse, Forward, Redirect, Stack
from meshctl.ingress.target_sync import TargetState

__all__ = ["describe_action", "stack_view"]


def describe_action(action: Action) -> str:
    if isinstance(action, Forward):
        if len(action.targets) == 1:
            return f"forward {action.targets[0][0]}"
        return "forward " + ", ".join(f"{ref} ({weight})" for ref, weight in action.targets)
    if isinstance(action, Redirect):
        return f"redirect {action.protocol}:{action.port} ({action.status_code})"
    assert isinstance(action, FixedResponse)
    return f"fixed-response {action.status_code}"


def stack_view(
    stack: Stack, deployed: Deployed | None, target_states: dict[str, TargetState], error: str | None
) -> dict[str, Any]:
    balancer = stack.load_balancer
    groups = []
    for group in stack.target_groups:
        arn = deployed.target_groups.get(group.resource_id) if deployed else None
        state = target_states.get(arn) if arn else None
        groups.append(
            {
                "resourceId": group.resource_id,
                "name": group.name,
                "arn": arn,
                "targetType": group.target_type,
                "protocol": group.protocol,
                "port": group.port,
                "service": f"{group.binding.service.namespace}/{group.binding.service.name}:{group.binding.port.port}",
                "registered": None if state is None else sum(1 for s in state.health.values() if s != "draining"),
                "healthy": None if state is None else state.healthy,
            }
        )
    return {
        "stack": stack.id,
        "kind": stack.kind,
        "owners": [f"{o.kind}/{o.namespace}/{o.name}" for o in stack.owners],
        "loadBalancer": None
        if balancer is None
        else {
            "name": balancer.name,
            "type": balancer.type,
            "scheme": balancer.scheme,
            "dnsName": deployed.dns_name if deployed else None,
            "securityGroups": list(deployed.security_groups) if deployed else [],
            "arn": deployed.load_balancer_arn if deployed else None,
        },
        "listeners": [
            {
                "port": li.port,
                "protocol": li.protocol,
                "defaultAction": describe_action(li.default_action),
                "certificates": list(li.certificates),
            }
            for li in stack.listeners
        ],
        "rules": [
            {
                "port": r.listener_port,
                "priority": r.priority,
                "conditions": [f"{c.field}={','.join(c.values)}" for c in r.conditions],
                "action": describe_action(r.action),
                "transforms": [
                    f"{kind} {regex} -> {replace}" for kind, rewrites in r.transforms for regex, replace in rewrites
                ],
            }
            for r in stack.rules
        ],
        "targetGroups": groups,
        "problems": [p.message for p in stack.problems],
        "error": error,
    }
