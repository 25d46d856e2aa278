"""The fast loop's AWS half: make one target group's targets what the plan says, in LBC's order.

Deregister first, then register, in chunks of 200 (LBC's ``targets_manager.go``): a terminating pod leaves the
target group before anything new joins, in the same pass. Target health is read through ``health``, the ELBv2 client
in production and a scripted fake in tests (moto reports every target healthy at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshctl.ingress.targets import Target, TargetPlan, plan_targets

__all__ = ["CHUNK", "TargetState", "TargetSyncer"]

CHUNK = 200


@dataclass
class TargetState:
    """A target group's targets after a sync, with health as last read."""

    health: dict[Target, str]
    plan: TargetPlan

    @property
    def healthy(self) -> int:
        return sum(1 for state in self.health.values() if state == "healthy")


class TargetSyncer:
    def __init__(self, elbv2: Any, health: Any) -> None:
        self.elbv2, self.health = elbv2, health

    def read(self, target_group_arn: str) -> dict[Target, str]:
        described = self.health.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
        return {
            (d["Target"]["Id"], int(d["Target"]["Port"])): d.get("TargetHealth", {}).get("State", "unavailable")
            for d in described
        }

    def sync(self, target_group_arn: str, desired: frozenset[Target]) -> TargetState:
        health = self.read(target_group_arn)
        return self.apply(target_group_arn, health, plan_targets(desired, health))

    def apply(self, target_group_arn: str, health: dict[Target, str], plan: TargetPlan) -> TargetState:
        """Carries out ``plan`` (made from ``health``, as just read); returns the targets as they now are."""
        health = dict(health)
        self._in_chunks("deregister_targets", target_group_arn, plan.deregister)
        health.update(dict.fromkeys(plan.deregister, "draining"))
        self._in_chunks("register_targets", target_group_arn, plan.register)
        health.update(dict.fromkeys(plan.register, "initial"))
        return TargetState(health=health, plan=plan)

    def deregister_all(self, target_group_arn: str) -> int:
        present = tuple(t for t, state in self.read(target_group_arn).items() if state != "draining")
        self._in_chunks("deregister_targets", target_group_arn, present)
        return len(present)

    def _in_chunks(self, operation: str, target_group_arn: str, targets: tuple[Target, ...]) -> None:
        for start in range(0, len(targets), CHUNK):
            chunk = targets[start : start + CHUNK]
            getattr(self.elbv2, operation)(
                TargetGroupArn=target_group_arn, Targets=[{"Id": ip, "Port": port} for ip, port in chunk]
            )
