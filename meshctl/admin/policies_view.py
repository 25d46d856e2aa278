"""``/api/v1/policies``: every AuthorizationPolicy with its status and how often it allowed, denied or (in Audit)
would have denied, summed over the connected proxies' Prometheus stats: Envoy's per-policy RBAC counters carry the
policy in the label ``envoy_rbac_policy_name`` and our filter (xds/envoy/rbac.py) in ``envoy_rbac_http_prefix``.
A proxy that cannot be scraped in time is counted as such, not waited for."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from meshctl.model import Model, ObjectKey
from meshctl.translate.ir import ObjectStatus

__all__ = ["parse_policy_counters", "policies_document", "scrape_policy_counters"]

# envoy_http_rbac_policy_allowed{envoy_rbac_policy_name="ns/name#0",envoy_rbac_http_prefix="meshctl_allow",...} 3
_LINE = re.compile(r"^envoy_http_rbac_policy_(shadow_denied|shadow_allowed|allowed|denied)\{([^}]*)\} (\d+)")
_POLICY = re.compile(r'envoy_rbac_policy_name="([^"]+)"')
_FILTER = re.compile(r'envoy_rbac_http_prefix="meshctl_(allow|deny|audit)"')
_SCRAPE_TIMEOUT = 2.0


def parse_policy_counters(text: str) -> dict[str, dict[str, int]]:
    """Policy (``ns/name``, rules summed) -> {allowed, denied, auditDenied} from one proxy's Prometheus text."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None or (policy := _POLICY.search(m.group(2))) is None or (f := _FILTER.search(m.group(2))) is None:
            continue
        which, counter, value = f.group(1), m.group(1), int(m.group(3))
        name = policy.group(1).split("#", 1)[0]
        key = {"shadow_denied": "auditDenied", "allowed": "allowed", "denied": "denied"}.get(counter)
        if key is None or (which == "audit") != (key == "auditDenied"):
            continue
        totals = out.setdefault(name, {"allowed": 0, "denied": 0, "auditDenied": 0})
        totals[key] += value
    return out


async def scrape_policy_counters(urls: Iterable[str]) -> tuple[dict[str, dict[str, int]], int, int]:
    """(counters summed over the proxies, proxies scraped, proxies that could not be)."""
    totals: dict[str, dict[str, int]] = {}
    urls = list(urls)
    if not urls:
        return totals, 0, 0
    timeout = aiohttp.ClientTimeout(total=_SCRAPE_TIMEOUT)

    async def one(session: aiohttp.ClientSession, url: str) -> str | None:
        try:
            async with session.get(url, params={"filter": "rbac"}) as r:
                return await r.text() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async with aiohttp.ClientSession(timeout=timeout) as session:
        texts = await asyncio.gather(*(one(session, u) for u in urls))
    for text in texts:
        for name, counts in parse_policy_counters(text or "").items():
            into = totals.setdefault(name, {"allowed": 0, "denied": 0, "auditDenied": 0})
            for k, v in counts.items():
                into[k] += v
    failed = sum(t is None for t in texts)
    return totals, len(texts) - failed, failed


def policies_document(
    model: Model, statuses: Mapping[ObjectKey, ObjectStatus], counters: Mapping[str, Mapping[str, int]]
) -> list[dict[str, Any]]:
    items = []
    for key in sorted(model.authorization_policies):
        policy = model.authorization_policies[key]
        spec = policy.spec
        status = statuses.get(key)
        name = f"{key.namespace}/{key.name}"
        items.append(
            {
                "namespace": key.namespace,
                "name": key.name,
                "action": spec.action.value if spec else None,
                "mode": ("Audit" if spec.audit else "Enforce") if spec else None,
                "targets": [f"{t.kind}/{t.name}" + (f":{t.port}" if t.port else "") for t in spec.targets]
                if spec
                else [],
                "accepted": status.accepted if status else False,
                "conditions": [
                    {"type": c.type, "status": str(c.status), "reason": c.reason, "message": c.message}
                    for c in (status.conditions if status else ())
                ],
                "counters": dict(counters.get(name, {"allowed": 0, "denied": 0, "auditDenied": 0})),
            }
        )
    return items
