"""NackJudge's bounds (meshctl/controlplane/nacks.py): one validation per rejected version however many proxies
NACK it, a bounded queue, and a failing validator blocks nothing. (Envoy's real verdicts are tested end to end in
tests/e2e/test_nack_containment.py; here a validator we control shows the accounting.)"""

from __future__ import annotations

import asyncio
import contextlib

from bench import meshgen
from meshctl.controlplane.nacks import NackJudge
from meshctl.model import ObjectKey
from meshctl.xds.envoy.types import CLUSTER
from meshctl.xds.server.nack import Nack
from tests.conftest import eventually
from tests.controller_driver import apply, controller_for

OWNER = ObjectKey("VirtualNode", meshgen.NS, "svc-1-v1")


@contextlib.asynccontextmanager
async def judge_with(validator, **kwargs):
    """A NackJudge on a running controller's gateway group, what it blocked, and a NACK maker by version."""
    async with controller_for([meshgen.GATEWAY]) as controller:
        await apply(controller, meshgen.build(3))
        snap = controller.cache.get(meshgen.GATEWAY.group)
        blocked: list[Nack] = []
        judge = NackJudge(controller.cache.get, blocked.append, validate=validator, **kwargs)

        def nack(version: str, node: str = "p") -> Nack:
            return Nack(
                node_id=node,
                group=meshgen.GATEWAY.group,
                type_url=CLUSTER,
                version=version,
                message="no",
                owners=frozenset({OWNER}),
                sent=snap.resources[CLUSTER],
            )

        yield judge, nack, blocked


async def test_a_version_is_judged_once_however_many_proxies_nack_it() -> None:
    calls = []
    release = asyncio.Event()

    async def validator(type_url, sent, group):
        calls.append(type_url)
        await release.wait()
        return False, "rejected"

    async with judge_with(validator) as (judge, nack, blocked):
        for i in range(50):
            judge.submit(nack("v1", node=f"p{i}"))
        await eventually(lambda: len(calls) == 1, interval=0.001)
        assert verdict(judge, "v1") == "pending"
        release.set()
        await eventually(lambda: verdict(judge, "v1") == "confirmed", interval=0.001)
        assert len(calls) == 1 and len(blocked) == 1


def verdict(judge: NackJudge, version: str) -> str | None:
    return judge.verdict(meshgen.GATEWAY.group, CLUSTER, version)


async def test_more_waiting_than_the_bound_are_dropped_and_counted() -> None:
    release = asyncio.Event()

    async def validator(type_url, sent, group):
        await release.wait()
        return True, ""

    async with judge_with(validator, max_pending=4) as (judge, nack, blocked):
        for i in range(10):
            judge.submit(nack(f"v{i}"))
        assert judge.dropped == 6
        release.set()
        await eventually(lambda: all(verdict(judge, f"v{i}") == "not-confirmed" for i in range(4)), interval=0.001)
        assert verdict(judge, "v9") is None and not blocked


async def test_a_failing_validator_blocks_nothing_and_says_so(caplog) -> None:
    async def validator(type_url, sent, group):
        raise RuntimeError("validator broke")

    async with judge_with(validator) as (judge, nack, blocked):
        judge.submit(nack("v1"))
        await eventually(lambda: verdict(judge, "v1") == "unknown", interval=0.001)
        assert not blocked
        assert "judging a NACK failed" in caplog.text and "validator broke" in caplog.text
