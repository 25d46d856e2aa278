"""Which targets a target group should have, and the plan that gets it there (pure).

``ip``: every address of the Service's endpoints that is ready, or held back only by one of our readiness gates
(its containers are ready: LBC registers those so they can become healthy and open the gate), and not terminating.
``instance``: every Ready node (its EC2 instance id, from ``spec.providerID``), on the port's NodePort.
The plan deregisters before it registers and never counts a draining target as present (LBC's
``partitionTargetsByDrainingStatus``: re-adding an IP:port that is draining must register it again)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from meshctl.ingress.stack import Binding
from meshctl.model import Model, ObjectKey, ServicePort

__all__ = [
    "Target",
    "TargetPlan",
    "branch_interfaces",
    "checkpoint",
    "desired_targets",
    "gated_pod_targets",
    "plan_targets",
]

Target = tuple[str, int]  # (pod IP address or EC2 instance id, port)


@dataclass(frozen=True, slots=True)
class TargetPlan:
    deregister: tuple[Target, ...]
    register: tuple[Target, ...]

    def __bool__(self) -> bool:
        return bool(self.deregister or self.register)


def _endpoint_port(binding: Binding, slice_ports: tuple[ServicePort, ...]) -> int | None:
    """The port the slice names like the Service port (EndpointSlices carry the resolved target port)."""
    for port in slice_ports:
        if port.name == binding.port.name:
            return port.port or None
    target = binding.port.target_port
    return target if isinstance(target, int) else binding.port.port if target is None else None


def desired_targets(model: Model, binding: Binding) -> frozenset[Target]:
    if binding.target_type == "instance":
        node_port = binding.port.node_port
        if node_port is None:
            return frozenset()
        return frozenset((n.instance_id, node_port) for n in model.nodes.values() if n.ready and n.instance_id)
    return frozenset(target for target, _ in _ip_targets(model, binding))


def _ip_targets(model: Model, binding: Binding) -> list[tuple[Target, str | None]]:
    """(target, pod name) for the Service's registrable endpoints."""
    found: list[tuple[Target, str | None]] = []
    namespace, service = binding.service.namespace, binding.service.name
    for key, endpoint_slice in model.endpoint_slices.items():
        if key.namespace != namespace or endpoint_slice.service_name != service:
            continue
        port = _endpoint_port(binding, endpoint_slice.ports)
        if port is None:
            continue
        for endpoint in endpoint_slice.endpoints:
            if endpoint.terminating:
                continue
            if not endpoint.ready:
                pod = model.pods.get(ObjectKey("Pod", namespace, endpoint.pod_name or ""))
                if pod is None or not pod.gates or not pod.containers_ready:
                    continue
            found.append(((endpoint.address, port), endpoint.pod_name))
    return found


def branch_interfaces(model: Model, binding: Binding) -> tuple[tuple[str, str], ...]:
    """(address, branch interface) of the ip targets whose pods have security groups of their own."""
    if binding.target_type != "ip":
        return ()
    found = set()
    for (address, _), pod_name in _ip_targets(model, binding):
        pod = model.pods.get(ObjectKey("Pod", binding.service.namespace, pod_name or ""))
        if pod is not None and pod.branch_eni is not None:
            found.add((address, pod.branch_eni))
    return tuple(sorted(found))


def gated_pod_targets(model: Model, binding: Binding) -> dict[str, tuple[Target, ...]]:
    """Pods whose readiness gate this binding answers for, and their targets in its target group."""
    if binding.target_type != "ip":
        return {}
    result: dict[str, list[Target]] = {}
    for target, pod_name in _ip_targets(model, binding):
        pod = model.pods.get(ObjectKey("Pod", binding.service.namespace, pod_name or ""))
        if pod_name and pod is not None and any(gate.endswith("/" + binding.gate) for gate, _ in pod.gates):
            result.setdefault(pod_name, []).append(target)
    return {name: tuple(targets) for name, targets in result.items()}


def plan_targets(desired: frozenset[Target], registered: dict[Target, str]) -> TargetPlan:
    """``registered``: what the target group has, with each target's health state."""
    present = {t for t, state in registered.items() if state != "draining"}
    return TargetPlan(
        deregister=tuple(sorted(present - desired)),
        register=tuple(sorted(desired - present)),
    )


def checkpoint(target_group_arn: str, desired: frozenset[Target]) -> str:
    text = target_group_arn + "|" + ",".join(f"{ip}:{port}" for ip, port in sorted(desired))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
