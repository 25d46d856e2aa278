"""The ingress reconciler: model in, AWS and Kubernetes brought in line. Runs on the leader only.

Each pass (in a worker thread: boto3 and the kubernetes client block) builds the desired stacks from the model
(pure), deploys the stacks that changed since they were last applied, syncs every target group's targets, flips
readiness gates, writes hostnames and finalizers, and reports bad input as Events. A stack that fails (AWS error,
invalid input) leaves every other stack alone and is retried with back-off. With unchanged input a pass makes no
AWS call at all; every ``resync`` seconds the stacks are compared with AWS again, to heal drift."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from meshctl.ingress.alb import build_ingress_stacks
from meshctl.ingress.aws import AwsClients, IngressMetrics
from meshctl.ingress.certificates import CertificateFinder
from meshctl.ingress.deploy import Deployed, DeployError, StackDeployer, Subnets
from meshctl.ingress.gateways import ALB_CONTROLLERS, NLB_CONTROLLERS, GatewayPlan, build_gateway_stacks
from meshctl.ingress.inventory import Inventory, read_inventory
from meshctl.ingress.kube import KubeWriter
from meshctl.ingress.naming import CHECKPOINT_ANNOTATION, TGB_FINALIZER
from meshctl.ingress.nlb import build_service_stacks
from meshctl.ingress.security_groups import GroupInUse, listen_protocols
from meshctl.ingress.stack import Binding, Problem, Stack
from meshctl.ingress.target_rules import TargetNeed, TargetRules, revoke_all
from meshctl.ingress.target_sync import TargetState, TargetSyncer
from meshctl.ingress.targets import (
    branch_interfaces,
    checkpoint,
    desired_targets,
    gated_pod_targets,
    plan_targets,
)
from meshctl.ingress.view import stack_view
from meshctl.kube.leader import LeaderElector
from meshctl.model import Model, ObjectKey
from meshctl.model.ingress import GATE_PREFIX, Lifecycle, TargetGroupBinding
from meshctl.translate.gateway import gateway_status_document
from meshctl.translate.ir import (
    Condition,
    ConditionStatus,
    GatewayStatusDetail,
    ListenerStatus,
    ObjectStatus,
    ParentStatus,
)

__all__ = ["IngressReconciler", "ReconcileSettings"]

log = logging.getLogger(__name__)
_FAILURES = (ClientError, BotoCoreError, DeployError, ApiException, HTTPError, OSError)


@dataclass(frozen=True)
class ReconcileSettings:
    cluster: str
    default_target_type: str = "instance"
    legacy_nlb: bool = False  # also take Services annotated aws-load-balancer-type: nlb (the in-tree provider's)
    ingress_class: str = "alb"  # --ingress-class: the kubernetes.io/ingress.class value that is ours (LBC's rules)
    requeue_seconds: float = 5.0  # while a readiness gate waits for health, or after a failure (doubling to 5 min)
    resync_seconds: float = 600.0  # compare every stack with AWS again this often


@dataclass
class _Binding:
    """A target group to keep in sync: where its checkpoint lives, its ARN and which endpoints it takes."""

    owner: ObjectKey
    checkpoint_key: str
    arn: str
    binding: Binding


@dataclass
class _Progress:
    settled: bool = True  # nothing failed (else: retry with back-off)
    polling: bool = False  # targets not yet healthy: read their health again soon (readiness gates, the view)


@dataclass
class IngressReconciler:
    clients: AwsClients
    kube: KubeWriter
    settings: ReconcileSettings
    subnets: Subnets
    metrics: IngressMetrics = field(default_factory=IngressMetrics)
    elector: LeaderElector | None = None

    def __post_init__(self) -> None:
        self.deployer = StackDeployer(self.clients.elbv2, self.subnets, self.settings.cluster, self.clients.ec2)
        assert self.deployer.groups is not None
        self.target_rules = TargetRules(self.clients.ec2, self.settings.cluster, self.deployer.groups)
        self._rules_applied: tuple[str, frozenset[TargetNeed]] | None = None
        self.certificates = CertificateFinder(self.clients.acm) if self.clients.acm is not None else None
        self._rule_problems: set[tuple[ObjectKey, str]] = set()
        self._desired: dict[str, frozenset[tuple[str, int]]] = {}
        self.targets = TargetSyncer(self.clients.elbv2, self.clients.health)
        self._model: Model | None = None
        self._wake = asyncio.Event()
        self.applied: dict[str, Stack] = {}  # what each stack was last made to match
        self.deployed: dict[str, Deployed] = {}
        self.checkpoints: dict[tuple[ObjectKey, str], str] = {}
        self.target_states: dict[str, TargetState] = {}  # by target group ARN
        # TargetGroupBinding spec (ARN, name, target type) -> (ARN, target type) as described by AWS
        self._bound: dict[tuple[str | None, str | None, str | None], tuple[str, str]] = {}
        self.views: dict[str, dict[str, Any]] = {}  # by stack id, for `meshctl get ingresses`
        self.errors: dict[str, str] = {}  # by stack id (or TargetGroupBinding key)
        self._reported: set[tuple[ObjectKey, str]] = set()
        self._last_resync = time.monotonic()
        self._statuses_written: dict[ObjectKey, Any] = {}  # Gateway API statuses as last written (to write changes)
        self.passes = 0
        if self.elector is not None:
            previous = self.elector.on_change

            def changed(leading: bool) -> None:
                if previous is not None:
                    previous(leading)
                if leading:  # another replica acted meanwhile: compare everything with AWS again
                    self.applied.clear()
                    self._statuses_written.clear()
                    self._wake.set()

            self.elector.on_change = changed

    # --- the asyncio side --------------------------------------------------------------------------------------

    def submit(self, model: Model) -> None:
        self._model = model
        self._wake.set()

    async def run(self) -> None:
        delay = self.settings.resync_seconds
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            model = self._model
            if model is None or (self.elector is not None and not self.elector.is_leader):
                delay = self.settings.resync_seconds
                continue
            try:
                progress = await asyncio.to_thread(self.reconcile, model)
            except Exception:  # a bug: say so, keep the task alive, try again after a pause
                log.exception("ingress reconcile pass failed")
                progress = _Progress(settled=False)
            failures = 0 if progress.settled else failures + 1
            if not progress.settled:
                delay = min(300.0, self.settings.requeue_seconds * 2 ** min(failures - 1, 6))
            else:
                delay = self.settings.requeue_seconds if progress.polling else self.settings.resync_seconds

    # --- one pass (worker thread) ------------------------------------------------------------------------------

    def reconcile(self, model: Model) -> _Progress:
        self.passes += 1
        progress = _Progress()
        self._desired.clear()  # this pass's desired targets, by target group ARN (worked out once a pass)
        if time.monotonic() - self._last_resync > self.settings.resync_seconds:
            self.applied.clear()
            self._statuses_written.clear()
            self._rules_applied = None
            self._last_resync = time.monotonic()
        stacks = build_ingress_stacks(
            model,
            cluster=self.settings.cluster,
            default_target_type=self.settings.default_target_type,
            ingress_class=self.settings.ingress_class,
            certificates=self.certificates.for_hosts if self.certificates is not None else None,
        ) + build_service_stacks(model, cluster=self.settings.cluster, legacy_nlb=self.settings.legacy_nlb)
        gateways = build_gateway_stacks(
            model,
            cluster=self.settings.cluster,
            default_target_type=self.settings.default_target_type,
            certificates=self.certificates.for_hosts if self.certificates is not None else None,
        )
        stacks += gateways.stacks
        self._report([p for s in stacks for p in s.problems])
        inventory: list[Inventory] = []  # read once, when the first stack needs it
        for stack in stacks:
            started = time.perf_counter()
            try:
                self._stack(model, stack, inventory, progress)
                if stack.valid:
                    self.errors.pop(stack.id, None)
            except _FAILURES as exc:
                self.errors[stack.id] = _message(exc)
                self.applied.pop(stack.id, None)
                self.metrics.reconcile_errors.labels(stack.kind).inc()
                log.warning("stack %s: %s", stack.id, self.errors[stack.id])
                progress.settled = False
            self.metrics.reconcile.labels(stack.kind).observe(time.perf_counter() - started)
            self._view(stack)
        self._gateway_statuses(gateways, progress)
        self._target_security_groups(model, stacks, progress)
        if inventory:
            self._release_backend_groups(stacks, inventory[0], progress)
        for key in sorted(model.target_group_bindings):
            try:
                self._target_group_binding(model, model.target_group_bindings[key], progress)
                self.errors.pop(str(key), None)
            except _FAILURES as exc:
                binding = model.target_group_bindings[key]
                self._bound.pop((binding.target_group_arn, binding.target_group_name, binding.target_type), None)
                self.errors[str(key)] = _message(exc)
                log.warning("%s: %s", key, self.errors[str(key)])
                progress.settled = False
        return progress

    def _stack(self, model: Model, stack: Stack, inventory: list[Inventory], progress: _Progress) -> None:
        if not stack.valid:
            # Bad input: AWS stays as it is (never half-applied); the problems are Events and in `get ingresses`.
            self.errors[stack.id] = "; ".join(p.message for p in stack.problems)
            return
        for owner in stack.owners:  # before anything is created, so a delete cannot skip the cleanup
            if stack.finalizer not in _lifecycle(model, owner).finalizers:
                self.kube.add_finalizer(owner, stack.finalizer)
        if self.applied.get(stack.id) != stack:
            if not inventory:
                inventory.append(read_inventory(self.clients.elbv2, self.settings.cluster, self.clients.ec2))
            if stack.load_balancer is not None or stack.id in inventory[0].stacks():
                self.deployed[stack.id] = self.deployer.deploy(stack, inventory[0])
            else:
                self.deployed[stack.id] = Deployed()
            self.applied[stack.id] = stack
        deployed = self.deployed[stack.id]
        for group in stack.target_groups:
            arn = deployed.target_groups[group.resource_id]
            self._sync(model, _Binding(group.owner, group.resource_id, arn, group.binding), progress)
        hostnames = (deployed.dns_name,) if deployed.dns_name else ()
        for owner in stack.owners:
            if owner.kind != "Gateway" and _lifecycle(model, owner).hostnames != hostnames:
                self.kube.set_hostnames(owner, hostnames)
        for key in stack.leaving:  # its resources are gone (or no longer its): let Kubernetes finish the delete
            self.kube.remove_finalizer(key, stack.finalizer)
        if stack.load_balancer is None:
            self.applied.pop(stack.id, None)
            self.deployed.pop(stack.id, None)

    def _gateway_statuses(self, plan: GatewayPlan, progress: _Progress) -> None:
        """Gateway API statuses of our ALB/NLB Gateways, their routes and classes: what the plan says, with
        Programmed and the load balancer's DNS name in ``addresses`` once AWS has it. Only changes are written."""
        wanted: dict[ObjectKey, Any] = {}
        for key, generation, accepted in plan.classes:
            wanted[key] = {"conditions": [_condition_document(accepted, generation)]}
        for report in plan.gateways:
            deployed = self.deployed.get(report.stack_id)
            error = self.errors.get(report.stack_id)
            programmed = _programmed(report.accepted, deployed, error)
            listeners = tuple(
                ListenerStatus(
                    name=li.name,
                    supported_kinds=li.supported_kinds,
                    attached_routes=li.attached_routes,
                    conditions=(*li.conditions, _listener_programmed(li, report.made, programmed)),
                )
                for li in report.listeners
            )
            addresses = (("Hostname", deployed.dns_name),) if deployed is not None and deployed.dns_name else ()
            status = ObjectStatus(
                key=report.key,
                observed_generation=report.generation,
                origin="",
                conditions=(report.accepted, programmed),
                gateway=GatewayStatusDetail(listeners=listeners, addresses=addresses),
            )
            wanted[report.key] = gateway_status_document(status)
        for route in plan.routes:
            wanted[route.key] = [_parent_document(controller, p, route.generation) for controller, p in route.parents]
        for key in [k for k in self._statuses_written if k not in wanted and k.kind not in ("Gateway", "GatewayClass")]:
            wanted[key] = []  # a route no longer attached to our Gateways: our entries go
        for key, document in wanted.items():
            if self._statuses_written.get(key) == document:
                continue
            try:
                if isinstance(document, list):
                    self.kube.set_route_parents(key, document, ALB_CONTROLLERS + NLB_CONTROLLERS)
                else:
                    self.kube.set_status(key, document)
            except _FAILURES as exc:
                log.warning("status of %s: %s", key, _message(exc))
                progress.settled = False
                continue
            if document == []:
                self._statuses_written.pop(key, None)
            else:
                self._statuses_written[key] = document

    def _target_security_groups(self, model: Model, stacks: list[Stack], progress: _Progress) -> None:
        """The targets' groups allow the backend group (meshctl/ingress/target_rules.py): worked out again only when
        a target, port or the backend group changed (or at a resync)."""
        needs: set[TargetNeed] = set()
        backend = None
        for stack in stacks:
            deployed = self.deployed.get(stack.id)
            if not stack.valid or deployed is None or deployed.backend_group is None:
                continue
            backend = deployed.backend_group
            for group in stack.target_groups:
                port = group.health_check.port
                arn = deployed.target_groups.get(group.resource_id, "")
                targets = self._desired.get(arn)  # (synced this pass: the same set, not worked out again)
                needs.add(
                    TargetNeed(
                        owner=group.owner,
                        target_type=group.target_type,
                        targets=targets if targets is not None else desired_targets(model, group.binding),
                        health_port=int(port) if port.isdigit() else None,
                        protocols=listen_protocols(group.protocol),
                        branch_enis=branch_interfaces(model, group.binding),
                    )
                )
        if backend is None or self._rules_applied == (backend, frozenset(needs)):
            return
        try:
            problems = self.target_rules.apply(backend, needs)
        except _FAILURES as exc:
            log.warning("security group rules for targets: %s", _message(exc))
            progress.settled = False
            return
        for owner, message in problems:
            if (owner, message) not in self._rule_problems:
                log.warning("%s: %s", owner, message)
                self.kube.event(owner, "TargetSecurityGroup", message)
        self._rule_problems = set(problems)
        # Unresolved targets are tried again when something changes, or at the next resync (not every pass).
        self._rules_applied = (backend, frozenset(needs))

    def _release_backend_groups(self, stacks: list[Stack], inventory: Inventory, progress: _Progress) -> None:
        """The cluster's backend security group goes once no load balancer of ours needs it (LBC's ``Release``): no
        stack wants one, none is left as it is for bad input, and every one the inventory found was deleted."""
        groups = self.deployer.groups
        if groups is None or not inventory.backend_groups:
            return
        for stack in stacks:
            balancer = stack.load_balancer
            if not stack.valid or stack.id in self.errors:
                return  # left as AWS has it, or its deletion failed: its load balancer may still use the group
            if balancer is not None and balancer.security_groups is not None:
                return
        ids = {s.id for s in stacks}
        if any(stack_id not in ids for stack_id in inventory.load_balancers):
            return  # a load balancer of ours that no stack accounts for
        for group in list(inventory.backend_groups):
            try:
                revoke_all(self.clients.ec2, groups, group.id)  # the targets' rules from it go first
                self._rules_applied = None
                groups.delete(group)
                inventory.backend_groups.remove(group)
            except GroupInUse as exc:
                log.info("%s", exc)
                progress.settled = False  # try again soon
            except _FAILURES as exc:
                log.warning("backend security group %s: %s", group.id, _message(exc))
                progress.settled = False

    def _sync(self, model: Model, target: _Binding, progress: _Progress) -> None:
        desired = self._desired[target.arn] = desired_targets(model, target.binding)
        mark = checkpoint(target.arn, desired)
        key = (target.owner, target.checkpoint_key)
        persisted = _checkpoints(_lifecycle(model, target.owner)).get(target.checkpoint_key, "")
        gated = gated_pod_targets(model, target.binding)
        gate = GATE_PREFIX + target.binding.gate
        namespace = target.binding.service.namespace
        gate_now = {pod: dict(model.pods[ObjectKey("Pod", namespace, pod)].gates).get(gate) for pod in gated}
        waiting = not all(gate_now.values())
        known = self.target_states.get(target.arn)
        settling = known is not None and known.healthy < len(known.health)
        if self.checkpoints.get(key, persisted) == mark and not waiting and not settling:
            self.checkpoints[key] = mark  # applied already (before a restart, too: LBC #3326)
            return
        health = self.targets.read(target.arn)
        plan = plan_targets(desired, health)
        if plan and persisted:
            self._persist_checkpoint(model, target.owner, target.checkpoint_key, "")  # a crash now must not skip
        state = self.targets.apply(target.arn, health, plan)
        self.target_states[target.arn] = state
        self.checkpoints[key] = mark
        if persisted != mark:
            self._persist_checkpoint(model, target.owner, target.checkpoint_key, mark)
        if state.healthy < len(state.health):
            progress.polling = True  # registered or draining targets: read health again soon
        for pod, targets in gated.items():
            healthy = all(state.health.get(t) == "healthy" for t in targets)
            if gate_now[pod] != healthy:
                states = ", ".join(
                    f"{ip}:{port} {state.health.get((ip, port), 'unregistered')}" for ip, port in targets
                )
                self.kube.set_pod_condition(ObjectKey("Pod", namespace, pod), gate, healthy, f"target {states}")
            if not healthy:
                progress.polling = True

    def _persist_checkpoint(self, model: Model, owner: ObjectKey, name: str, mark: str) -> None:
        marks = _checkpoints(_lifecycle(model, owner))
        marks.update({k: v for (o, k), v in self.checkpoints.items() if o == owner})
        marks[name] = mark
        self.kube.set_annotation(owner, CHECKPOINT_ANNOTATION, json.dumps(marks, sort_keys=True))

    def _target_group_binding(self, model: Model, tgb: TargetGroupBinding, progress: _Progress) -> None:
        key = ObjectKey("TargetGroupBinding", tgb.meta.namespace, tgb.meta.name)
        if tgb.lifecycle.deleting:
            if TGB_FINALIZER in tgb.lifecycle.finalizers:
                bound = self._bound_group(tgb)
                if bound is not None:
                    self.targets.deregister_all(bound[0])  # the target group itself is not ours to delete
                    self.target_states.pop(bound[0], None)
                self.kube.remove_finalizer(key, TGB_FINALIZER)
            return
        if TGB_FINALIZER not in tgb.lifecycle.finalizers:
            self.kube.add_finalizer(key, TGB_FINALIZER)
        bound = self._bound_group(tgb)
        if bound is None:
            raise DeployError(f"target group {tgb.target_group_name or tgb.target_group_arn} does not exist")
        arn, target_type = bound
        service = model.services.get(ObjectKey("Service", key.namespace, tgb.service_name))
        port = next(
            (p for p in service.ports if tgb.service_port in (p.port, p.name)) if service is not None else iter(()),
            None,
        )
        if service is None or port is None:
            ref = f"{tgb.service_name}:{tgb.service_port}"
            raise DeployError(f"spec.serviceRef: Service port {key.namespace}/{ref} does not exist")
        service_key = ObjectKey("Service", key.namespace, tgb.service_name)
        binding = Binding(service=service_key, port=port, target_type=target_type, gate=tgb.meta.name)
        self._sync(model, _Binding(key, "binding", arn, binding), progress)

    def _bound_group(self, tgb: TargetGroupBinding) -> tuple[str, str] | None:
        """(ARN, target type) of the binding's target group: one DescribeTargetGroups per spec, remembered (not on
        every pass; forgotten when the binding's pass fails, in case the group was replaced)."""
        spec = (tgb.target_group_arn, tgb.target_group_name, tgb.target_type)
        if spec in self._bound:
            return self._bound[spec]
        try:
            if tgb.target_group_arn:
                found = self.clients.elbv2.describe_target_groups(TargetGroupArns=[tgb.target_group_arn])
            else:
                found = self.clients.elbv2.describe_target_groups(Names=[tgb.target_group_name])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TargetGroupNotFound":
                return None
            raise
        if not found["TargetGroups"]:
            return None
        group = found["TargetGroups"][0]
        self._bound[spec] = (str(group["TargetGroupArn"]), tgb.target_type or str(group["TargetType"]))
        return self._bound[spec]

    def _report(self, problems: list[Problem]) -> None:
        """Each problem once (a log line and a Warning Event) until it goes away."""
        current = {(p.owner, p.message) for p in problems}
        for problem in problems:
            if (problem.owner, problem.message) in self._reported:
                continue
            log.warning("%s", problem)
            self.kube.event(problem.owner, problem.reason, problem.message)
        self._reported = current

    def _view(self, stack: Stack) -> None:
        if stack.load_balancer is None and stack.valid:
            self.views.pop(stack.id, None)
            return
        self.views[stack.id] = stack_view(
            stack, self.deployed.get(stack.id), self.target_states, self.errors.get(stack.id)
        )


def _lifecycle(model: Model, key: ObjectKey) -> Lifecycle:
    if key.kind == "Ingress":
        ingress = model.ingresses.get(key)
        return ingress.lifecycle if ingress is not None else Lifecycle()
    if key.kind == "Gateway":
        gateway = model.gateways.get(key)
        return gateway.lifecycle if gateway is not None else Lifecycle()
    if key.kind == "Service":
        service = model.services.get(key)
        return service.exposure.lifecycle if service is not None and service.exposure is not None else Lifecycle()
    binding = model.target_group_bindings.get(key)
    return binding.lifecycle if binding is not None else Lifecycle()


def _checkpoints(lifecycle: Lifecycle) -> dict[str, str]:
    try:
        marks = json.loads(lifecycle.checkpoints or "{}")
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in marks.items()} if isinstance(marks, dict) else {}


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
    if isinstance(exc, ApiException):
        return f"Kubernetes API: {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


def _programmed(accepted: Condition, deployed: Deployed | None, error: str | None) -> Condition:
    """A Gateway's Programmed: True (the load balancer's ARN as its message) once AWS has it, as LBC says it."""
    if accepted.status is not ConditionStatus.TRUE:
        return Condition(type="Programmed", status=ConditionStatus.FALSE, reason="Invalid", message=accepted.message)
    if error is not None:
        return Condition(type="Programmed", status=ConditionStatus.FALSE, reason="Pending", message=error)
    if deployed is None or not deployed.load_balancer_arn:
        message = "waiting for the load balancer"
        return Condition(type="Programmed", status=ConditionStatus.FALSE, reason="Pending", message=message)
    return Condition(
        type="Programmed", status=ConditionStatus.TRUE, reason="Programmed", message=deployed.load_balancer_arn
    )


def _listener_programmed(li: ListenerStatus, made: frozenset[str], gateway: Condition) -> Condition:
    if gateway.status is not ConditionStatus.TRUE:
        return Condition(
            type="Programmed", status=ConditionStatus.FALSE, reason=gateway.reason, message=gateway.message
        )
    if any(c.type in ("Accepted", "ResolvedRefs") and c.status is not ConditionStatus.TRUE for c in li.conditions):
        return Condition(type="Programmed", status=ConditionStatus.FALSE, reason="Invalid", message="not valid")
    if li.name not in made:
        # As in LBC: a load balancer listener is made once a route attaches (no port open for nothing).
        message = "no route attached yet: the load balancer listener is made when one attaches"
        return Condition(type="Programmed", status=ConditionStatus.FALSE, reason="Pending", message=message)
    return Condition(type="Programmed", status=ConditionStatus.TRUE, reason="Programmed", message="programmed")


def _condition_document(c: Condition, generation: int) -> dict[str, Any]:
    return {
        "type": c.type,
        "status": c.status.value,
        "reason": c.reason,
        "message": c.message,
        "observedGeneration": generation,
    }


def _parent_document(controller: str, parent: ParentStatus, generation: int) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "group": parent.parent.group,
        "kind": parent.parent.kind,
        "namespace": parent.parent.namespace,
        "name": parent.parent.name,
    }
    if parent.parent.port is not None:
        ref["port"] = parent.parent.port
    if parent.parent.section_name is not None:
        ref["sectionName"] = parent.parent.section_name
    conditions = [_condition_document(c, generation) for c in parent.conditions]
    return {"parentRef": ref, "controllerName": controller, "conditions": conditions}
