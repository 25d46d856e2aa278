"""Whether to believe a proxy's NACK: only when it is confirmed independently of the proxy that sent it.

xDS clients are not all alike (another Envoy version, a proxyless gRPC client, a misbehaving or hostile one), and
blocking an object for the whole mesh on one client's word let any process that reaches the xDS port take a
VirtualNode down. So a NACK first changes only what that proxy is sent (its stream keeps its last ACKed config and
never gets the rejected version again); the objects it blames are blocked for everyone only when Envoy's own
validator (``envoy --mode validate``, the check the golden tests use), run off the serving loop on the rejected
resources (with what they need of the group's config), rejects them too.

Bounded: one validation at a time, one per (group, type, version) however many proxies NACK it, at most
``max_pending`` waiting (more are dropped and counted), the last ``remember`` verdicts kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Literal

from meshctl.xds.cache import CachedResource, Snapshot
from meshctl.xds.envoy.types import SHORT_NAMES
from meshctl.xds.server.nack import Nack
from meshctl.xds.validate import validate_rejected

__all__ = ["NackJudge", "Verdict"]

log = logging.getLogger(__name__)
# confirmed: Envoy's validator rejects it too (blocked); not-confirmed: it accepts it (the client's alone);
# superseded: confirmed, but the group's config changed meanwhile (nothing to block); unknown: no verdict (no
# validator, a timeout); pending: being judged.
Verdict = Literal["pending", "confirmed", "not-confirmed", "superseded", "unknown"]
Validator = Callable[
    [str, Mapping[str, CachedResource], Mapping[str, Mapping[str, CachedResource]]], Awaitable[tuple[bool | None, str]]
]


class NackJudge:
    def __init__(
        self,
        snapshots: Callable[[str], Snapshot | None],
        block: Callable[[Nack], object],
        *,
        validate: Validator = validate_rejected,
        on_verdict: Callable[[Verdict], None] = lambda _: None,
        max_pending: int = 16,
        remember: int = 256,
    ) -> None:
        self._snapshots = snapshots
        self._block = block
        self._validate = validate
        self._on_verdict = on_verdict
        self.max_pending = max_pending
        self._remember = remember
        self._verdicts: OrderedDict[tuple[str, str, str], Verdict] = OrderedDict()
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._one_at_a_time = asyncio.Lock()
        self.dropped = 0  # NACKs not judged because too many were waiting

    def verdict(self, group: str, type_url: str, version: str) -> Verdict | None:
        return self._verdicts.get((group, type_url, version))

    def submit(self, nack: Nack) -> None:
        """Called on the serving loop for every NACK; returns at once."""
        if not nack.owners or nack.key in self._verdicts:
            return  # nothing to blame, or this version is judged (or being judged) already
        if len(self._tasks) >= self.max_pending:
            self.dropped += 1
            log.warning(
                "NACK of %s from %s not judged: %d already waiting", nack.version, nack.node_id, len(self._tasks)
            )
            return
        self._set(nack.key, "pending")
        task = asyncio.get_running_loop().create_task(self._judge(nack), name=f"judge-nack-{nack.version}")
        self._tasks[nack.key] = task
        task.add_done_callback(partial(self._done, nack.key))

    def _set(self, key: tuple[str, str, str], verdict: Verdict) -> None:
        self._verdicts[key] = verdict
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self._remember:
            self._verdicts.popitem(last=False)

    def _done(self, key: tuple[str, str, str], task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("judging a NACK failed; nothing was blocked", exc_info=exc)
            self._set(key, "unknown")
            self._on_verdict("unknown")

    async def _judge(self, nack: Nack) -> None:
        short = SHORT_NAMES.get(nack.type_url, nack.type_url)
        async with self._one_at_a_time:
            snap = self._snapshots(nack.group)
            if snap is None:  # the group is gone
                verdict: Verdict = "unknown"
            else:
                accepted, output = await self._validate(nack.type_url, nack.sent, snap.resources)
                verdict = "not-confirmed" if accepted else "unknown" if accepted is None else "confirmed"
                if verdict == "unknown":
                    log.warning("no verdict on the %s NACK from %s: %s", short, nack.node_id, output)
        if verdict == "confirmed" and self._superseded(nack):
            verdict = "superseded"
        self._set(nack.key, verdict)
        self._on_verdict(verdict)
        if verdict == "confirmed":
            self._block(nack)
        elif verdict == "not-confirmed":
            log.warning(
                "proxy %s rejected %s version %s, which Envoy's validator accepts: only that proxy keeps its last "
                "config (%s)",
                nack.node_id,
                short,
                nack.version,
                nack.message,
            )

    def _superseded(self, nack: Nack) -> bool:
        """The group no longer serves what was rejected (an edit since): its objects are judged anew when sent."""
        snap = self._snapshots(nack.group)
        if snap is None:
            return True
        current = snap.resources.get(nack.type_url, {})
        return any((now := current.get(name)) is None or now.version != res.version for name, res in nack.sent.items())
