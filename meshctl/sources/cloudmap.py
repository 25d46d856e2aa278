"""AWS Cloud Map discovery: the instances of the Cloud Map services that VirtualNodes name
(``serviceDiscovery.awsCloudMap``), as App Mesh's management service discovered them for its Envoys.

Cheap polling, as AWS advises: ``DiscoverInstancesRevision`` every 5 s, and ``DiscoverInstances`` only when the
revision differs (never assumed to increase) or every 30 s regardless (health changes do not move the revision).
At 1,000 discoveries that is 200 + 33 calls/s against limits of 3,000 and 1,000/s per account and Region. boto3's
calls block: they run in a worker thread, never on the loop that serves xDS. Credentials: boto3's default chain (the
controller's IRSA role); the IAM policy is deploy/iam/discovery-policy.json."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

from meshctl.model import CloudMapAnswer, CloudMapDiscovery, CloudMapInstance, IpPreference

__all__ = ["Boto3CloudMap", "CloudMapApi", "CloudMapError", "CloudMapPoller", "instances_of"]

POLL_SECONDS = 5.0
RESYNC_SECONDS = 30.0
MAX_RESULTS = 1000  # Cloud Map's per-service instance limit: one call gets them all


class CloudMapError(Exception):
    """A discovery that gave no answer: throttled, a 5xx, no such namespace or service, no credentials."""


class CloudMapApi(Protocol):
    """The two calls discovery makes (blocking; run in a thread)."""

    def revision(self, namespace: str, service: str) -> int: ...

    def instances(
        self, namespace: str, service: str, attributes: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], int]: ...


class Boto3CloudMap:
    """``servicediscovery`` through boto3, made on first use. With an endpoint override (``AWS_ENDPOINT_URL``:
    moto, a VPC endpoint), Discover* keep that host: boto3 would otherwise prefix it with ``data-``."""

    def __init__(self) -> None:
        self._client: Any = None

    def _api(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            from meshctl.version import CONTROLLER_USER_AGENT

            custom = bool(os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_SERVICEDISCOVERY"))
            config = Config(
                retries={"mode": "standard", "total_max_attempts": 3},
                user_agent_extra=CONTROLLER_USER_AGENT,
                inject_host_prefix=not custom,
            )
            self._client = boto3.client("servicediscovery", config=config)
        return self._client

    def revision(self, namespace: str, service: str) -> int:
        answer = _call(lambda: self._api().discover_instances_revision(NamespaceName=namespace, ServiceName=service))
        return int(answer["InstancesRevision"])

    def instances(
        self, namespace: str, service: str, attributes: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], int]:
        kwargs: dict[str, Any] = {
            "NamespaceName": namespace,
            "ServiceName": service,
            "MaxResults": MAX_RESULTS,
            "HealthStatus": "ALL",  # unhealthy ones too: Envoy is told they are unhealthy
        }
        if attributes:
            kwargs["QueryParameters"] = dict(attributes)
        answer = _call(lambda: self._api().discover_instances(**kwargs))
        return list(answer.get("Instances", [])), int(answer.get("InstancesRevision", 0))


def _call(fn: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CloudMapError(f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")) from None
    except BotoCoreError as exc:  # no region or credentials, an endpoint not reachable
        raise CloudMapError(str(exc)) from None


def instances_of(found: list[dict[str, Any]], preference: IpPreference | None) -> tuple[CloudMapInstance, ...]:
    """Cloud Map's instances as endpoints, sorted (AWS returns them in random order; versions are content hashes).
    The address by the preference (IPv4 first when none, as App Mesh did); an instance with no usable address or a
    port that is not a number is left out."""
    out = set()
    for instance in found:
        attrs = instance.get("Attributes") or {}
        v4, v6 = attrs.get("AWS_INSTANCE_IPV4"), attrs.get("AWS_INSTANCE_IPV6")
        if preference is IpPreference.IPV4_ONLY:
            order: tuple[str | None, ...] = (v4,)
        elif preference is IpPreference.IPV6_ONLY:
            order = (v6,)
        elif preference is IpPreference.IPV6_PREFERRED:
            order = (v6, v4)
        else:
            order = (v4, v6)
        address = next((a for a in order if a), None)
        port_text = attrs.get("AWS_INSTANCE_PORT")
        if address is None or (port_text is not None and not str(port_text).isdigit()):
            continue
        port = int(port_text) if port_text is not None and 0 < int(port_text) < 65536 else None
        healthy = instance.get("HealthStatus") != "UNHEALTHY"
        out.add(CloudMapInstance(address=address, port=port, healthy=healthy, zone=attrs.get("AVAILABILITY_ZONE", "")))
    return tuple(sorted(out, key=lambda i: (i.address, i.port or 0, i.zone, i.healthy)))


class CloudMapPoller:
    """One discovery's polling state: the revision last seen and when to list the instances regardless."""

    def __init__(self, api: CloudMapApi, discovery: CloudMapDiscovery) -> None:
        self.api = api
        self.discovery = discovery
        self._revision: int | None = None
        self._resync_at = 0.0

    async def poll(self, previous: CloudMapAnswer | None) -> tuple[CloudMapAnswer, float]:
        """The current answer and how long to wait before the next poll; raises CloudMapError."""
        d = self.discovery
        now = time.monotonic()
        revision = await asyncio.to_thread(self.api.revision, d.namespace_name, d.service_name)
        if previous is not None and previous.error is None and now < self._resync_at and revision == self._revision:
            return previous, POLL_SECONDS
        # The revision is read before the list: a change between the two is seen as a new revision next time.
        found, _ = await asyncio.to_thread(self.api.instances, d.namespace_name, d.service_name, dict(d.attributes))
        self._revision, self._resync_at = revision, now + RESYNC_SECONDS
        return CloudMapAnswer(instances=instances_of(found, d.ip_preference)), POLL_SECONDS
