"""What the ingress reconciler writes to Kubernetes: finalizers, load balancer hostnames in status, checkpoints,
readiness-gate conditions on pods, and Events. Synchronous (the ``kubernetes`` client); called from the
reconciler's worker thread. Every write is a JSON merge patch carrying the resourceVersion it read, retried on 409,
so a concurrent edit is never overwritten."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshctl.kube.conflicts import retry_on_conflict
from meshctl.kube.events import record_event
from meshctl.kube.status_writer import keep_gateway_transition_times, keep_transition_times, parent_ref_key
from meshctl.model import ObjectKey
from meshctl.model.gateway import GATEWAY_GROUP
from meshctl.model.ingress import ELBV2_GROUP

__all__ = ["KubeWriter"]

log = logging.getLogger(__name__)
_MERGE = "application/merge-patch+json"
# Gateway API kinds we write (Gateways: finalizers, checkpoints, status; routes: their status.parents entries).
_GATEWAY_PLURALS = {
    "Gateway": "gateways",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
    "TCPRoute": "tcproutes",
    "UDPRoute": "udproutes",
    "TLSRoute": "tlsroutes",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeWriter:
    def __init__(self, api: client.ApiClient, component: str = "meshctl-ingress") -> None:
        self.core = client.CoreV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.component = component
        self.writes = 0

    # --- one object, by kind -----------------------------------------------------------------------------------

    def _read(self, key: ObjectKey) -> dict[str, Any] | None:
        raw: Any
        try:
            if key.kind == "Ingress":
                raw = self.networking.read_namespaced_ingress(key.name, key.namespace, _preload_content=False)
            elif key.kind == "Service":
                raw = self.core.read_namespaced_service(key.name, key.namespace, _preload_content=False)
            elif key.kind == "Pod":
                raw = self.core.read_namespaced_pod(key.name, key.namespace, _preload_content=False)
            elif key.kind == "GatewayClass":
                raw = self.custom.get_cluster_custom_object(
                    GATEWAY_GROUP, "v1", "gatewayclasses", key.name, _preload_content=False
                )
            else:
                raw = self.custom.get_namespaced_custom_object(*self._custom(key), _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj: dict[str, Any] = json.loads(raw.data)
        return obj

    @staticmethod
    def _custom(key: ObjectKey) -> tuple[str, str, str, str, str]:
        if key.kind in _GATEWAY_PLURALS:
            return (GATEWAY_GROUP, "v1", key.namespace, _GATEWAY_PLURALS[key.kind], key.name)
        assert key.kind == "TargetGroupBinding", key
        return (ELBV2_GROUP, "v1beta1", key.namespace, "targetgroupbindings", key.name)

    def _patch(self, key: ObjectKey, body: dict[str, Any], *, status: bool = False) -> None:
        args = (key.name, key.namespace, body)
        if key.kind == "Ingress":
            fn: Callable[..., Any] = (
                self.networking.patch_namespaced_ingress_status if status else self.networking.patch_namespaced_ingress
            )
        elif key.kind == "Service":
            fn = self.core.patch_namespaced_service_status if status else self.core.patch_namespaced_service
        elif key.kind == "Pod":
            fn = self.core.patch_namespaced_pod_status if status else self.core.patch_namespaced_pod
        elif key.kind == "GatewayClass":
            assert status, key
            self.custom.patch_cluster_custom_object_status(
                GATEWAY_GROUP, "v1", "gatewayclasses", key.name, body, _content_type=_MERGE
            )
            self.writes += 1
            return
        else:
            patch = (
                self.custom.patch_namespaced_custom_object_status
                if status
                else self.custom.patch_namespaced_custom_object
            )
            patch(*self._custom(key), body, _content_type=_MERGE)
            self.writes += 1
            return
        fn(*args, _content_type=_MERGE)
        self.writes += 1

    def _update(self, key: ObjectKey, change: Callable[[dict[str, Any]], dict[str, Any] | None], **kw: Any) -> bool:
        """Reads, asks ``change`` for a patch (None: nothing to do), patches with the resourceVersion read; a 409
        reads again. False if the object is gone."""

        def once() -> bool:
            obj = self._read(key)
            if obj is None:
                return False
            patch = change(obj)
            if patch is None:
                return True
            patch.setdefault("metadata", {})["resourceVersion"] = obj["metadata"]["resourceVersion"]
            try:
                self._patch(key, patch, **kw)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        return retry_on_conflict(once, what=str(key))

    # --- what the reconciler writes ----------------------------------------------------------------------------

    def add_finalizer(self, key: ObjectKey, finalizer: str) -> bool:
        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if finalizer in finalizers or meta.get("deletionTimestamp"):
                return None
            return {"metadata": {"finalizers": [*finalizers, finalizer]}}

        return self._update(key, change)

    def remove_finalizer(self, key: ObjectKey, finalizer: str) -> bool:
        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            finalizers = list(obj["metadata"].get("finalizers") or [])
            if finalizer not in finalizers:
                return None
            return {"metadata": {"finalizers": [f for f in finalizers if f != finalizer]}}

        return self._update(key, change)

    def set_hostnames(self, key: ObjectKey, hostnames: tuple[str, ...]) -> bool:
        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            wanted = [{"hostname": h} for h in hostnames]
            current = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if current == wanted:
                return None
            return {"status": {"loadBalancer": {"ingress": wanted}}}

        return self._update(key, change, status=True)

    def set_annotation(self, key: ObjectKey, name: str, value: str | None) -> bool:
        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            if (obj["metadata"].get("annotations") or {}).get(name) == value:
                return None
            return {"metadata": {"annotations": {name: value}}}

        return self._update(key, change)

    def set_pod_condition(self, key: ObjectKey, condition: str, healthy: bool, message: str) -> bool:
        status = "True" if healthy else "False"

        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            conditions = list((obj.get("status") or {}).get("conditions") or [])
            current = next((c for c in conditions if c.get("type") == condition), None)
            if current is not None and current.get("status") == status:
                return None
            entry = {
                "type": condition,
                "status": status,
                "reason": "TargetHealthy" if healthy else "TargetNotHealthy",
                "message": message,
                "lastTransitionTime": _now(),
                "lastProbeTime": None,
            }
            # Merge patch replaces lists: send the whole list with ours changed.
            updated = [entry if c.get("type") == condition else c for c in conditions]
            if current is None:
                updated.append(entry)
            return {"status": {"conditions": updated}}

        return self._update(key, change, status=True)

    def set_status(self, key: ObjectKey, document: dict[str, Any]) -> bool:
        """A Gateway's or GatewayClass's ``status`` fields in ``document`` (a controller owns them whole); each
        condition keeps its lastTransitionTime while its status stays. No write when only the times would differ."""

        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            before = obj.get("status") or {}
            wanted = json.loads(json.dumps(document))
            keep_gateway_transition_times(wanted, before)
            if all(before.get(k) == v for k, v in wanted.items()):
                return None
            return {"status": wanted}

        return self._update(key, change, status=True)

    def set_route_parents(self, key: ObjectKey, entries: list[dict[str, Any]], controllers: tuple[str, ...]) -> bool:
        """A route's ``status.parents`` entries of ``controllers`` replaced by ``entries``; other controllers'
        entries kept, as the Gateway API asks of every controller."""

        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            existing = list((obj.get("status") or {}).get("parents") or [])
            ours = {
                parent_ref_key(p.get("parentRef") or {}): p for p in existing if p.get("controllerName") in controllers
            }
            others = [p for p in existing if p.get("controllerName") not in controllers]
            wanted = json.loads(json.dumps(entries))
            for entry in wanted:
                before = (ours.get(parent_ref_key(entry["parentRef"])) or {}).get("conditions") or []
                keep_transition_times(entry["conditions"], before)
            parents = others + wanted
            if parents == existing:
                return None
            return {"status": {"parents": parents}}

        return self._update(key, change, status=True)

    def event(self, key: ObjectKey, reason: str, message: str) -> None:
        api_version = {
            "Ingress": "networking.k8s.io/v1",
            "TargetGroupBinding": f"{ELBV2_GROUP}/v1beta1",
            "GatewayClass": f"{GATEWAY_GROUP}/v1",
            **{kind: f"{GATEWAY_GROUP}/v1" for kind in _GATEWAY_PLURALS},
        }.get(key.kind, "v1")
        record_event(self.core, key, api_version=api_version, reason=reason, message=message, component=self.component)
