"""Writes VirtualNode and Route conditions back to the cluster, through the status subresource.

Only changes are written (a condition keeps its lastTransitionTime while its status stays the same). Each write
reads the object and updates its status with that resourceVersion; a 409 Conflict means someone wrote in between,
so it reads again and retries. A newly rejected object also gets a Warning Event naming the field, as
`kubectl describe` users expect. Runs the synchronous client in a worker thread; the newest statuses win.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from meshctl.kube.conflicts import retry_on_conflict
from meshctl.kube.events import record_event
from meshctl.kube.leader import LeaderElector
from meshctl.model import API_GROUP, ObjectKey
from meshctl.model.gateway import GATEWAY_CONTROLLER, GATEWAY_GROUP
from meshctl.translate.gamma import CONTROLLER_NAME, parents_document
from meshctl.translate.gateway import gateway_status_document
from meshctl.translate.ir import ObjectStatus

__all__ = ["StatusWriter", "keep_gateway_transition_times", "keep_transition_times", "parent_ref_key"]

log = logging.getLogger(__name__)
_PLURALS = {
    "VirtualNode": "virtualnodes",
    "Route": "routes",
    "AuthorizationPolicy": "authorizationpolicies",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
    "Gateway": "gateways",
    "GatewayClass": "gatewayclasses",
}
_GATEWAY_KINDS = frozenset({"HTTPRoute", "GRPCRoute"})
_CONTROLLERS = frozenset({CONTROLLER_NAME, GATEWAY_CONTROLLER})  # the mesh's and the edge gateways' entries
_RETRY_AFTER = 0.5  # seconds before failed writes are tried again


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    def __init__(self, api: client.ApiClient, component: str = "meshctl", elector: LeaderElector | None = None) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.component = component
        self.written: dict[ObjectKey, tuple[Any, ...]] = {}  # what the cluster has, to write only changes
        self.writes = 0
        self.conflicts = 0
        self._current: tuple[ObjectStatus, ...] = ()
        self._wake = asyncio.Event()
        self.elector = elector
        if elector is not None:
            elector.on_change = self._leadership_changed

    def report_invalid(self, key: ObjectKey, api_version: str, message: str) -> None:
        """A Warning Event on an object the source cannot read (leader only), recorded from a worker thread."""
        if self.elector is not None and not self.elector.is_leader:
            return
        record = partial(
            record_event,
            self.core,
            key,
            api_version=api_version,
            reason="InvalidObject",
            message=message,
            component=self.component,
        )
        asyncio.get_running_loop().run_in_executor(None, record)

    def submit(self, statuses: tuple[ObjectStatus, ...]) -> None:
        """The controller's on_statuses hook: remember the newest statuses, wake the writer."""
        self._current = statuses
        self._wake.set()

    def _leadership_changed(self, leading: bool) -> None:
        if leading:  # another replica may have written meanwhile: write everything once more
            self.written.clear()
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.elector is not None and not self.elector.is_leader:
                    continue  # followers only remember; they write after taking over
                if self._current and not await asyncio.to_thread(self.write_all, self._current):
                    # Some writes failed (API server unreachable, say): try those again after a pause.
                    await asyncio.sleep(_RETRY_AFTER)
                    self._wake.set()
        finally:
            # Shutting down: write what is still pending once, while (if electing) we still hold the lease.
            if self._current and (self.elector is None or self.elector.is_leader):
                await asyncio.shield(asyncio.to_thread(self.write_all, self._current))

    def write_all(self, statuses: tuple[ObjectStatus, ...]) -> bool:
        """Writes what changed; False if any write failed (it stays unwritten, to be retried) or leadership was
        lost part way: leadership is checked before every write, not once per batch (issue 9)."""
        complete = True
        for status in statuses:
            if status.key.kind not in _PLURALS:
                continue
            if self.elector is not None and not self.elector.is_leader:
                return False
            wanted = (
                status.observed_generation,
                tuple((c.type, c.status, c.reason, c.message) for c in status.conditions),
                tuple((p.parent, p.conditions) for p in status.parents),
                status.gateway,
            )
            if self.written.get(status.key) == wanted:
                continue
            try:
                if self.write(status):
                    self.written[status.key] = wanted
            except ApiException as exc:
                log.warning("cannot write status of %s: %s %s", status.key, exc.status, exc.reason)
                complete = False
            except (HTTPError, OSError) as exc:  # connection refused or reset: the API server is away
                log.warning("cannot write status of %s: %s", status.key, exc)
                complete = False
        return complete

    def write(self, status: ObjectStatus) -> bool:
        """Read, update status with that resourceVersion, retry on conflict. False if the object is gone."""

        def counted() -> None:
            self.conflicts += 1

        return retry_on_conflict(lambda: self._write_once(status), what=str(status.key), on_conflict=counted)

    def _write_once(self, status: ObjectStatus) -> bool:
        key = status.key
        if key.kind in _GATEWAY_KINDS:
            return self._write_route_parents(status)
        if key.kind in ("Gateway", "GatewayClass"):
            return self._write_gateway(status)
        args = (API_GROUP, "v1alpha1", key.namespace, _PLURALS[key.kind], key.name)
        current = self._read(args)
        if current is None:
            return False
        previous = {c["type"]: c for c in (current.get("status") or {}).get("conditions") or []}
        conditions = []
        for c in status.conditions:
            before = previous.get(c.type) or {}
            changed = not before or before.get("status") != c.status.value
            conditions.append(
                {
                    "type": c.type,
                    "status": c.status.value,
                    "reason": c.reason,
                    "message": c.message,
                    "observedGeneration": status.observed_generation,
                    "lastTransitionTime": _now() if changed else before.get("lastTransitionTime", _now()),
                }
            )
        current["status"] = {"observedGeneration": status.observed_generation, "conditions": conditions}
        self.custom.replace_namespaced_custom_object_status(*args, current)  # a 409 reruns this (write)
        self.writes += 1
        # A Warning Event when the object is newly rejected (Accepted), refused by Envoy (Programmed) or shadowed.
        for c in status.conditions:
            if c.type in ("Accepted", "Programmed", "Reachable") and c.status.value == "False":
                if previous.get(c.type, {}).get("status") != "False":
                    self._event(key, current, c.reason, c.message)
                break
        return True

    def _read(self, args: tuple[str, str, str, str, str]) -> dict[str, Any] | None:
        """The object (group, version, namespace, plural, name) as it is now; None when it is gone."""
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(*args)  # type: ignore[assignment]
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def _write_route_parents(self, status: ObjectStatus) -> bool:
        """A Gateway API route's ``status.parents``: ours (controllerName) replaced, other controllers' kept, as the
        API asks of every controller."""
        key = status.key
        args = (GATEWAY_GROUP, "v1", key.namespace, _PLURALS[key.kind], key.name)
        current = self._read(args)
        if current is None:
            return False
        existing = (current.get("status") or {}).get("parents") or []
        ours = {
            parent_ref_key(p.get("parentRef") or {}): p for p in existing if p.get("controllerName") in _CONTROLLERS
        }
        others = [p for p in existing if p.get("controllerName") not in _CONTROLLERS]
        parents = []
        for entry in parents_document(status):
            before = (ours.get(parent_ref_key(entry["parentRef"])) or {}).get("conditions") or []
            keep_transition_times(entry["conditions"], before)
            parents.append(entry)
        current["status"] = {**(current.get("status") or {}), "parents": others + parents}
        self.custom.replace_namespaced_custom_object_status(*args, current)  # a 409 reruns this (write)
        self.writes += 1
        newly_rejected = [
            c
            for p, entry in zip(status.parents, parents, strict=True)
            for c in p.conditions
            if c.status.value == "False"
            and (
                {
                    x["type"]: x for x in (ours.get(parent_ref_key(entry["parentRef"])) or {}).get("conditions") or []
                }.get(c.type, {}).get("status")
                != "False"
            )
        ]
        if newly_rejected:
            self._event(key, current, newly_rejected[0].reason, newly_rejected[0].message)
        return True

    def _write_gateway(self, status: ObjectStatus) -> bool:
        """A Gateway's status (conditions, listeners, addresses) or a GatewayClass's conditions: the class's
        controller owns them whole."""
        key = status.key
        if key.kind == "GatewayClass":
            current = self._read_class(key.name)
            document: dict[str, Any] = {"conditions": gateway_status_document(status)["conditions"]}
        else:
            current = self._read((GATEWAY_GROUP, "v1", key.namespace, "gateways", key.name))
            document = gateway_status_document(status)
        if current is None:
            return False
        before = current.get("status") or {}
        keep_gateway_transition_times(document, before)
        current["status"] = {**before, **document}
        if key.kind == "GatewayClass":
            self.custom.replace_cluster_custom_object_status(GATEWAY_GROUP, "v1", "gatewayclasses", key.name, current)
        else:
            self.custom.replace_namespaced_custom_object_status(
                GATEWAY_GROUP, "v1", key.namespace, "gateways", key.name, current
            )
        self.writes += 1
        was = {c.get("type"): c.get("status") for c in before.get("conditions") or []}
        for c in status.conditions:
            if c.status.value == "False" and was.get(c.type) != "False":
                self._event(key, current, c.reason, c.message)
                break
        return True

    def _read_class(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_cluster_custom_object(  # type: ignore[assignment]
                GATEWAY_GROUP, "v1", "gatewayclasses", name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def _event(self, key: ObjectKey, obj: dict[str, Any], reason: str, message: str) -> None:
        meta = obj["metadata"]
        record_event(
            self.core,
            key,
            api_version=obj["apiVersion"],
            reason=reason,
            message=message,
            component=self.component,
            uid=meta.get("uid", ""),
            resource_version=meta.get("resourceVersion", ""),
        )


def parent_ref_key(ref: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(ref.get(k) for k in ("group", "kind", "namespace", "name", "port", "sectionName"))


def keep_gateway_transition_times(document: dict[str, Any], before: dict[str, Any]) -> None:
    """A Gateway's (or GatewayClass's) status ``document``: its conditions and each listener's keep their
    lastTransitionTime from ``before`` (the status as it is) while their status is unchanged."""
    keep_transition_times(document.get("conditions", []), before.get("conditions") or [])
    old_listeners = {li.get("name"): li for li in before.get("listeners") or []}
    for listener in document.get("listeners", []):
        old = (old_listeners.get(listener["name"]) or {}).get("conditions") or []
        keep_transition_times(listener["conditions"], old)


def keep_transition_times(conditions: list[dict[str, Any]], before: list[dict[str, Any]]) -> None:
    """Each condition's lastTransitionTime: kept while its status is unchanged, now when it changed."""
    old = {c.get("type"): c for c in before}
    for c in conditions:
        previous = old.get(c["type"]) or {}
        same = previous.get("status") == c["status"]
        c["lastTransitionTime"] = previous.get("lastTransitionTime", _now()) if same else _now()
