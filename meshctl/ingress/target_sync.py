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
        for start in range(0, len(plan.deregister), CHUNK):
            chunk = plan.deregister[start : start + CHUNK]
            self.elbv2.deregister_targets(
                TargetGroupArn=target_group_arn, Targets=[{"Id": ip, "Port": port} for ip, port in chunk]
            )
            for target in chunk:
                health[target] = "draining"
        for start in range(0, len(plan.register), CHUNK):
            chunk = plan.register[start : start + CHUNK]
            self.elbv2.register_targets(
                TargetGroupArn=target_group_arn, Targets=[{"Id": ip, "Port": port} for ip, port in chunk]
            )
            for target in chunk:
                health[target] = "initial"
        return TargetState(health=health, plan=plan)

    def deregister_all(self, target_group_arn: str) -> int:
        present = [t for t, state in self.read(target_group_arn).items() if state != "draining"]
        for start in range(0, len(present), CHUNK):
            chunk = present[start : start + CHUNK]
            self.elbv2.deregister_targets(
                TargetGroupArn=target_group_arn, Targets=[{"Id": ip, "Port": port} for ip, port in chunk]
            )
        return len(present)
