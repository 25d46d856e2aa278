"""The sidecar injection webhook: AdmissionReview v1 over HTTPS (aiohttp), answered from the controller's model.

``POST /mutate-v1-pod``: the review's Pod, the VirtualNodes of its namespace (from the model the control plane
serves, so injection and xDS agree) -> ``inject`` -> a JSON Patch. A review that cannot be read gets a clear
denial (HTTP 200 with ``allowed: false`` and a 400 status when it has a uid to answer, else HTTP 400): never a
traceback. Pods the injector leaves alone are allowed unchanged, with its reason as an admission warning.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from meshctl.inject.pod_patch import InjectConfig, VirtualNodeRef, inject

__all__ = ["MUTATE_PATH", "InjectionWebhook"]

log = logging.getLogger(__name__)
MUTATE_PATH = "/mutate-v1-pod"


class InjectionWebhook:
    def __init__(
        self,
        config: InjectConfig,
        virtual_nodes: Callable[[str], list[VirtualNodeRef]],
        ca_pem: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``virtual_nodes(namespace)``: the VirtualNodes pods of that namespace may belong to. ``ca_pem()``: the
        CA the sidecars trust for xDS, read per request so a renewed CA reaches new pods at once."""
        self.config = config
        self.virtual_nodes = virtual_nodes
        self.ca_pem = ca_pem
        self.on_error: Callable[[str], None] = lambda task: None  # counts a failure (the plane's metrics)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post(MUTATE_PATH, self.mutate)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def mutate(self, request: web.Request) -> web.Response:
        try:
            review = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return self._deny_unreadable("the body is not JSON")
        req = review.get("request") if isinstance(review, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("uid"), str) or not req["uid"]:
            return self._deny_unreadable("not an AdmissionReview: request.uid is missing")
        uid = req["uid"]
        if review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
            return self._answer(uid, allowed=False, message="only admission.k8s.io/v1 AdmissionReview is served")
        pod = req.get("object")
        kind = req.get("kind") or {}
        if not isinstance(pod, dict) or kind.get("kind", "Pod") != "Pod" or not isinstance(pod.get("spec"), dict):
            return self._answer(uid, allowed=False, message="request.object is not a Pod with a spec")
        namespace = req.get("namespace") or (pod.get("metadata") or {}).get("namespace") or ""
        if not namespace:
            return self._answer(uid, allowed=False, message="the review names no namespace")
        try:
            config = replace(self.config, ca_pem=self.ca_pem() or self.config.ca_pem)
            result = inject(pod, namespace, self.virtual_nodes(namespace), config)
        except Exception:  # a bug must not block pods: allow unchanged, say so, log it
            log.exception("injection failed for a pod in %s", namespace)
            self.on_error("injection-webhook")
            return self._answer(uid, warnings=["meshctl: injection failed (see the controller's log); not injected"])
        name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName", "?")
        if result.patch:
            log.info("injected %s/%s as VirtualNode %s", namespace, name, result.virtual_node)
        return self._answer(uid, patch=result.patch, warnings=list(result.warnings))

    def _answer(
        self,
        uid: str,
        *,
        allowed: bool = True,
        message: str | None = None,
        patch: list[dict[str, Any]] | None = None,
        warnings: list[str] | None = None,
    ) -> web.Response:
        response: dict[str, Any] = {"uid": uid, "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 400, "reason": "BadRequest", "message": f"meshctl injection: {message}"}
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
        if warnings:
            response["warnings"] = warnings
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    def _deny_unreadable(self, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400, "reason": "BadRequest"}
        return web.json_response({**body, "message": f"meshctl injection: {message}"}, status=400)
