"""Recording a Kubernetes Event about an object (what `kubectl describe` shows under Events)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshctl.model import ObjectKey

__all__ = ["record_event"]

log = logging.getLogger(__name__)


def record_event(
    core: client.CoreV1Api,
    key: ObjectKey,
    *,
    api_version: str,
    reason: str,
    message: str,
    component: str,
    uid: str = "",
    resource_version: str = "",
    kind: str = "Warning",
) -> None:
    """Best effort: a failure is logged, never raised (an Event is a courtesy, not state)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{key.name}.", "namespace": key.namespace},
        "involvedObject": {
            "apiVersion": api_version,
            "kind": key.kind,
            "name": key.name,
            "namespace": key.namespace,
            "uid": uid,
            "resourceVersion": resource_version,
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        core.create_namespaced_event(key.namespace, event)  # type: ignore[arg-type]  # a dict body works
    except ApiException as exc:
        log.warning("cannot record an Event for %s: %s", key, exc.status)
