"""Discovery beyond Kubernetes as part of the source: the model gets the answers for the VirtualNodes found by DNS
(``Model.dns``, sources/dns.py) and by AWS Cloud Map (``Model.cloud_map``, sources/cloudmap.py).

``DiscoveringSource`` wraps the source: each model it emits gets the current answers for what its VirtualNodes name,
and an answer that changes re-emits the latest model with it (a full build: neither field has a fast path). Each
name or Cloud Map service is looked up by a task of its own, again after the wait its lookup gives (the DNS TTL, the
Cloud Map poll interval); a failure keeps the last answer with the error (shown on the VirtualNodes, ``Resolved``)
and is retried with backoff (1 s doubling to 30 s, jittered): a resolver or Cloud Map outage never empties a node."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Any

from meshctl.model import CloudMapAnswer, CloudMapDiscovery, DnsAnswer, IpPreference, Model
from meshctl.sources.base import ModelSink, Source
from meshctl.sources.cloudmap import Boto3CloudMap, CloudMapApi, CloudMapError, CloudMapPoller
from meshctl.sources.dns import DnsError, DnsResolver

__all__ = ["DiscoveringSource", "wanted"]

log = logging.getLogger(__name__)

FIRST_RETRY, LAST_RETRY = 1.0, 30.0

Answer = DnsAnswer | CloudMapAnswer
Lookup = Callable[[Any], Awaitable[tuple[Answer, float]]]  # (the previous answer) -> (the answer, seconds to wait)
# ("dns", hostname) -> its address preference; ("cloudmap", CloudMapDiscovery.key) -> the discovery
Wanted = dict[tuple[str, str], Hashable]


def wanted(model: Model) -> Wanted:
    """What the model's VirtualNodes ask to be discovered."""
    out: Wanted = {}
    for vn in model.virtual_nodes.values():
        spec = vn.spec
        if spec is None:
            continue
        if spec.dns is not None:
            out.setdefault(("dns", spec.dns.hostname), spec.dns.ip_preference)
        if spec.cloud_map is not None:
            out.setdefault(("cloudmap", spec.cloud_map.key), spec.cloud_map)
    return out


class DiscoveringSource:
    def __init__(self, inner: Source, resolver: DnsResolver, cloud_map: CloudMapApi | None = None) -> None:
        self.inner = inner
        self.resolver = resolver
        self.cloud_map: CloudMapApi = cloud_map if cloud_map is not None else Boto3CloudMap()
        self.answers: dict[tuple[str, str], Answer] = {}
        self._watches: dict[tuple[str, str], tuple[Hashable, asyncio.Task[None]]] = {}
        self._latest: Model | None = None
        self._wanted: Wanted = {}  # what the latest model asks for (one pass over its VirtualNodes per model)
        self._sink: ModelSink | None = None
        self._emitting = asyncio.Lock()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()  # where the model comes from: the wrapped source (``meshctl shift`` reads it)

    def __getattr__(self, name: str) -> Any:  # the wrapped source's own API (e.g. the manifest directory)
        return getattr(self.inner, name)

    async def run(self, sink: ModelSink) -> None:
        self._sink = sink
        try:
            await self.inner.run(self._from_inner)
        finally:
            for _, task in self._watches.values():
                task.cancel()

    async def _from_inner(self, model: Model) -> None:
        self._latest, self._wanted = model, wanted(model)
        self._watch(self._wanted)
        await self._emit()

    def _watch(self, names: Wanted) -> None:
        for key in list(self._watches):
            if key not in names or self._watches[key][0] != names[key]:
                self._watches.pop(key)[1].cancel()
                self.answers.pop(key, None)
        for key, what in names.items():
            if key not in self._watches:
                task = asyncio.create_task(self._keep_looking(key, self._lookup(key, what)), name=f"discover {key}")
                self._watches[key] = (what, task)

    def _lookup(self, key: tuple[str, str], what: Hashable) -> Lookup:
        if key[0] == "dns":
            preference = what if isinstance(what, IpPreference) else None

            async def resolve(previous: Any) -> tuple[Answer, float]:
                addresses, ttl = await self.resolver.resolve(key[1], preference)
                return DnsAnswer(addresses=addresses), ttl

            return resolve
        assert isinstance(what, CloudMapDiscovery)
        return CloudMapPoller(self.cloud_map, what).poll

    async def _emit(self) -> None:
        model, sink = self._latest, self._sink
        if model is None or sink is None:
            return
        async with self._emitting:
            names = self._wanted
            dns = {k[1]: a for k, a in self.answers.items() if k in names and isinstance(a, DnsAnswer)}
            cloud = {k[1]: a for k, a in self.answers.items() if k in names and isinstance(a, CloudMapAnswer)}
            if dns != model.dns or cloud != model.cloud_map:
                model = replace(model, dns=dns, cloud_map=cloud)  # (no fast path for these: a full build)
            await sink(model)

    async def _keep_looking(
        self, key: tuple[str, str], lookup: Callable[[Any], Awaitable[tuple[Answer, float]]]
    ) -> None:
        retry = FIRST_RETRY
        while True:
            previous = self.answers.get(key)
            try:
                answer, wait = await lookup(previous)
                retry = FIRST_RETRY
            except (DnsError, CloudMapError) as exc:
                answer, wait = _failed(key, previous, str(exc)), retry
                retry = min(retry * 2, LAST_RETRY)
            except Exception as exc:  # a bug or a malformed reply: said, retried, never the end of the task
                log.warning("discovery of %s failed: %s", key[1], exc, exc_info=True)
                answer, wait = _failed(key, previous, f"{type(exc).__name__}: {exc}"), retry
                retry = min(retry * 2, LAST_RETRY)
            if answer != previous:
                if answer.error and (previous is None or previous.error != answer.error):
                    log.warning("discovery of %s: %s (the last answer is kept)", key[1], answer.error)
                self.answers[key] = answer
                await self._emit()
            await asyncio.sleep(wait * random.uniform(0.9, 1.0))  # jitter: lookups do not all fall together


def _failed(key: tuple[str, str], previous: Answer | None, error: str) -> Answer:
    if key[0] == "dns":
        kept = previous.addresses if isinstance(previous, DnsAnswer) else ()
        return DnsAnswer(addresses=kept, error=error)
    instances = previous.instances if isinstance(previous, CloudMapAnswer) else ()
    return CloudMapAnswer(instances=instances, error=f"{key[1]}: {error}")
