"""Progressive ``meshctl shift --steps``: judged by the callers' own Envoys, rolled back on errors or too little
traffic, and a rollback reported only once every caller ACKed it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import aiohttp

from tests.conftest import Mesh, eventually
from tests.e2e.test_shift import HTTPROUTE_FILE, MESHCTL, ROUTE_FILE, httproute_mesh, meshctl, reviews_mesh
from tests.netns import make_isolated, remove
from tests.port_forward import unix_to_tcp


async def canary_mesh(mesh_factory, **v2_behavior) -> tuple[Mesh, object, str]:
    """One caller whose Envoy serves its stats (what the shift reads)."""
    m, (sidecar,), admin = await reviews_mesh(mesh_factory, callers=1, stats=True, **v2_behavior)
    return m, sidecar, admin


@contextlib.asynccontextmanager
async def traffic(m: Mesh, sidecar, concurrency: int = 4, limit: int = 20_000):
    """Requests through the caller until the block ends (bounded in count)."""
    stop = asyncio.Event()
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while not stop.is_set() and sent < limit:
            sent += 1
            with contextlib.suppress(aiohttp.ClientError):
                await m.get(sidecar, "reviews")
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def progressive(admin: str, *extra: str) -> list[str]:
    return [
        "shift", "reviews", "-n", "demo", "--to", "reviews-v2=100", "--steps", "50,100", "--admin", admin,
        "--max-error-rate", "10%", *extra,
    ]  # fmt: skip


async def test_failing_canary_is_rolled_back_and_gets_nothing_after(mesh_factory):
    m, sidecar, admin = await canary_mesh(mesh_factory, fail_every=2, fail_status=500)
    async with traffic(m, sidecar):
        code, out, err = await meshctl(*progressive(admin, "--interval", "5s", "--min-requests", "20"))
    assert code == 1, (out, err)
    assert "rolling back: step 50%: error rate " in out and "% > 10.0%" in out
    assert "rolled back to reviews-v1 100%, reviews-v2 0%: 1 proxies ACKed the change" in out
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE  # the original weights, byte for byte
    # Reported done means ACKed by the caller: from now on no request reaches v2.
    reached_v2 = sum(m.apps["v2"].seen.values())
    assert reached_v2 > 0
    for _ in range(100):
        status, body, _ = await m.get(sidecar, "reviews")
        assert (status, body) == (200, "v1")
    assert sum(m.apps["v2"].seen.values()) == reached_v2


async def run_in(laptop, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *laptop.command(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_a_shift_through_one_port_forward_is_judged_and_rolled_back(mesh_factory, tmp_path):
    """The CLI where a user's laptop is: in a network namespace of its own, with the control plane's admin port
    reached through one port-forward and no route to any caller's stats port. The control plane reads the callers'
    stats; the shift judges its step by them and rolls the failing target back. Needs root (``ip netns``)."""
    m, sidecar, _ = await canary_mesh(mesh_factory, fail_every=2, fail_status=500)
    laptop = make_isolated("mlaptop")
    socket_path = str(tmp_path / "admin.sock")
    try:
        async with unix_to_tcp(socket_path, m.plane.admin_port):
            await laptop.start(
                sys.executable, "-m", "tests.port_forward", "19000", socket_path, log=tmp_path / "pf.log"
            )
            probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"

            async def forwarded() -> bool:
                return (await run_in(laptop, sys.executable, "-c", probe, "http://127.0.0.1:19000/readyz"))[0] == 0

            await eventually(forwarded, timeout=15, interval=0.2)
            stats_url = (await m.proxy())["statsUrl"]
            code, _, err = await run_in(laptop, sys.executable, "-c", probe, stats_url)
            assert code != 0 and "Connection refused" in err, err  # the caller's stats: out of the laptop's reach
            async with traffic(m, sidecar):
                code, out, err = await run_in(
                    laptop,
                    *MESHCTL,
                    *progressive("http://127.0.0.1:19000", "--interval", "5s", "--min-requests", "20"),
                )
    finally:
        await laptop.stop()
        remove(laptop)
    assert code == 1, (out, err)
    assert "rolling back: step 50%: error rate " in out and "% > 10.0%" in out
    assert "rolled back to reviews-v1 100%, reviews-v2 0%: 1 proxies ACKed the change" in out
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE


async def test_healthy_canary_reaches_100(mesh_factory):
    m, sidecar, admin = await canary_mesh(mesh_factory)
    async with traffic(m, sidecar):
        code, out, err = await meshctl(*progressive(admin, "--interval", "2s", "--min-requests", "20"))
    assert code == 0, (out, err)
    assert "step 1/2: reviews-v2 50%: 1 proxies ACKed the change" in out
    assert "done: reviews-v2 takes 100% of demo/reviews" in out
    assert "weight: 100" in (m.dir / "route.yaml").read_text().split("reviews-v2")[1]
    assert {(await m.get(sidecar, "reviews"))[1] for _ in range(20)} == {"v2"}


async def test_too_little_traffic_holds_and_says_so_then_rolls_back(mesh_factory):
    m, _, admin = await canary_mesh(mesh_factory)
    code, out, err = await meshctl(*progressive(admin, "--interval", "1s", "--min-requests", "20", "--max-hold", "2s"))
    assert code == 1, (out, err)
    assert "holding: only 0 requests reached the new target" in out and "(--min-requests 20)" in out
    assert "rolling back: step 50%: not enough traffic to judge (0 < 20 requests in 3s)" in out
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE


async def test_dry_run_prints_the_whole_plan(mesh_factory):
    m, _, admin = await canary_mesh(mesh_factory)
    code, out, err = await meshctl(*progressive(admin, "--dry-run", "--interval", "30s", "--max-p99", "500ms"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "progressive shift of Route demo/reviews (demo/reviews, /*) to reviews-v2"
    assert lines[2].split()[:5] == ["1", "50%", "reviews-v1", "50%,", "reviews-v2"]
    assert lines[3].split()[:3] == ["2", "100%", "reviews-v2"]
    assert lines[4].startswith("callers read: demo/frontend/pod-0")
    assert "p99 <= 500ms" in lines[5] and "roll back to reviews-v1 100%, reviews-v2 0%" in lines[5]
    assert lines[-1] == "dry run: nothing written"
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE


async def test_ctrl_c_restores_the_original_weights(mesh_factory):
    m, sidecar, admin = await canary_mesh(mesh_factory)
    async with traffic(m, sidecar):
        proc = await asyncio.create_subprocess_exec(
            *MESHCTL,
            *progressive(admin, "--interval", "60s", "--min-requests", "20"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert first.decode().startswith("step 1/2: reviews-v2 50%: 1 proxies ACKed")
        proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    out = first.decode() + rest.decode()
    assert proc.returncode == 130, (out, err)
    assert "rolling back: interrupted (Ctrl-C)" in out and "rolled back to reviews-v1 100%, reviews-v2 0%" in out
    assert "Traceback" not in err.decode()
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE


async def test_a_failing_httproute_canary_is_rolled_back_too(mesh_factory):
    """The same progressive shift on an HTTPRoute's backendRefs (Services), judged by the caller's Envoy stats of the
    Service-port clusters."""
    m, (sidecar,), admin = await httproute_mesh(mesh_factory, callers=1, stats=True, fail_every=2, fail_status=500)
    args = progressive(admin, "--interval", "5s", "--min-requests", "20")
    args[1] = "httproute/reviews"
    async with traffic(m, sidecar):
        code, out, err = await meshctl(*args)
    assert code == 1, (out, err)
    assert "rolling back: step 50%: error rate " in out
    assert "rolled back to reviews-v1 100%, reviews-v2 0%: 1 proxies ACKed the change" in out
    assert (m.dir / "route.yaml").read_text() == HTTPROUTE_FILE
