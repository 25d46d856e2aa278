"""Who may read the admin API in a cluster (the kube-rbac-proxy pattern): the caller's bearer token is checked with
TokenReview, and what it may do with SubjectAccessReview against one documented permission: ``get`` on
``controlplane`` in ``mesh.meshctl.dev`` (ClusterRole ``meshctl-admin-reader`` grants it). Results are kept for
30 s per token (only its SHA-256), so a dashboard polling every second costs two reviews a half-minute."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from kubernetes import client

__all__ = ["ADMIN_PERMISSION", "XDS_AUDIENCE", "AdminReviewer", "XdsTokenReviewer"]

XDS_AUDIENCE = "meshctl"  # the audience of the projected token a proxy presents on its xDS stream

ADMIN_PERMISSION = {"verb": "get", "group": "mesh.meshctl.dev", "resource": "controlplane"}
_CACHE_SECONDS = 30.0


class AdminReviewer:
    def __init__(self, api: client.ApiClient) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._cache: dict[str, tuple[float, int, str]] = {}  # sha256 -> (until, HTTP status, why)

    async def __call__(self, authorization: str | None) -> tuple[int, str]:
        """(200, user), or (401 | 403, why)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return 401, "a Kubernetes bearer token is required (Authorization: Bearer ...)"
        token = authorization[7:].strip()
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        status, why = await asyncio.to_thread(self._review, token)
        if len(self._cache) > 10_000:  # bounded: a flood of made-up tokens cannot grow it without end
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + _CACHE_SECONDS, status, why)
        return status, why

    def _review(self, token: str) -> tuple[int, str]:
        try:
            review: Any = self._authn.create_token_review(
                client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
            )
        except client.ApiException as exc:
            return 401, f"the token could not be reviewed ({exc.status})"
        status = review.status
        if not status or not status.authenticated or not status.user:
            return 401, "the token is not valid"
        user = status.user
        access: Any = self._authz.create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=user.username,
                    groups=user.groups,
                    uid=user.uid,
                    resource_attributes=client.V1ResourceAttributes(
                        verb=ADMIN_PERMISSION["verb"],
                        group=ADMIN_PERMISSION["group"],
                        resource=ADMIN_PERMISSION["resource"],
                    ),
                )
            )
        )
        if not access.status or not access.status.allowed:
            return 403, f"{user.username} may not get controlplane.mesh.meshctl.dev"
        return 200, str(user.username)


POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"


class XdsTokenReviewer:
    """Who a proxy is, from the projected ServiceAccount token it sends on its xDS stream (audience ``meshctl``):
    TokenReview must accept it for that audience, for ``system:serviceaccount:<namespace>:<name>``. Verdicts are
    kept 30 s per token (its SHA-256), so a reconnect storm costs one review per pod."""

    def __init__(self, api: client.ApiClient, audience: str = XDS_AUDIENCE) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self.audience = audience
        self._cache: dict[str, tuple[float, tuple[str, str, str] | str]] = {}

    async def __call__(self, authorization: str | None) -> tuple[str, str, str] | str:
        """(namespace, service account, pod: "" for a token bound to none), or why not."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return "no ServiceAccount token (authorization: Bearer ...) on the stream"
        token = authorization[7:].strip()
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        verdict = await asyncio.to_thread(self._review, token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + _CACHE_SECONDS, verdict)
        return verdict

    def _review(self, token: str) -> tuple[str, str, str] | str:
        spec = client.V1TokenReviewSpec(token=token, audiences=[self.audience])
        try:
            review: Any = self._authn.create_token_review(client.V1TokenReview(spec=spec))
        except client.ApiException as exc:
            return f"the token could not be reviewed ({exc.status})"
        status = review.status
        if not status or not status.authenticated or not status.user:
            return "the token is not valid for audience " + self.audience
        parts = str(status.user.username).split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return f"{status.user.username} is not a ServiceAccount"
        # A projected token is bound to its pod; the API server says which (Kubernetes >= 1.21).
        pods = (status.user.extra or {}).get(POD_NAME_EXTRA) or [""]
        return parts[2], parts[3], str(pods[0])
