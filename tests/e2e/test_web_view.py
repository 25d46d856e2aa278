"""The web view (issue 35, first part) in a real headless browser (Debian's chromium over the DevTools protocol):
the mesh renders with its weights, a shift changes the edge label in the open page without a reload, a proxy that
NACKs turns its VirtualNode red with Envoy's message, and the page runs under its strict Content-Security-Policy.
A screenshot of each state is saved with the test's files."""

from __future__ import annotations

import time

import aiohttp

from meshctl.xds.envoy.types import CLUSTER
from tests.ads_client import AdsClient
from tests.browser import Browser
from tests.conftest import Mesh, eventually
from tests.manifests import route, service, virtual_node, workload, write

SHIFT_SECONDS = 2.0  # the bound: a shift shows in the open page within 2 s


def docs(m: Mesh, weights: tuple[int, int]) -> list:
    return [
        service("reviews"),
        *workload("reviews", "v1", m.ports["v1"]),
        *workload("reviews", "v2", m.ports["v2"]),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": weights[0], "reviews-v2": weights[1]}),
    ]


async def labels(page) -> dict[str, str]:
    """Edge label by (from -> to), as drawn in the SVG."""
    return await page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#graph g.edge')].map("
        "e => [e.dataset.from + ' -> ' + e.dataset.to, (e.querySelector('text') || {}).textContent || '']))"
    )


async def test_the_mesh_renders_a_shift_shows_without_a_reload_and_a_nack_turns_red(mesh_factory, tmp_path):
    m: Mesh = await mesh_factory()
    await m.app("v1")
    await m.app("v2", fail_every=2, fail_status=500)
    write(m.dir / "mesh.yaml", *docs(m, (90, 10)))
    await m.start()
    sidecar = await m.sidecar("demo/frontend", stats=True)
    url = f"http://127.0.0.1:{m.plane.admin_port}/ui/"
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp

    browser = Browser(tmp_path / "chromium")
    await browser.start()
    try:
        page = await browser.page(url)

        async def drawn() -> bool:
            return bool(
                await page.evaluate("(document.documentElement && document.documentElement.dataset.version) || ''")
            )

        await eventually(drawn, timeout=20)
        await page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        texts = await page.evaluate("[...document.querySelectorAll('#graph text')].map(t => t.textContent)")
        for name in ("Service demo/reviews", "VirtualNode demo/frontend", "VirtualNode demo/reviews-v1",
                     "VirtualNode demo/reviews-v2"):  # fmt: skip
            assert name in texts, texts
        edges = await labels(page)
        assert edges["Service/demo/reviews -> VirtualNode/demo/reviews-v1"] == "90%", edges
        assert edges["Service/demo/reviews -> VirtualNode/demo/reviews-v2"] == "10%", edges
        assert "1 proxy · SYNCED" in texts, texts
        await page.screenshot(tmp_path / "mesh.png")

        # A shift, as `meshctl shift` writes it: the label changes in the open page, no reload.
        shifted = time.monotonic()
        write(m.dir / "mesh.yaml", *docs(m, (50, 50)))

        async def half() -> bool:
            return (await labels(page)).get("Service/demo/reviews -> VirtualNode/demo/reviews-v1") == "50%"

        await eventually(half, timeout=SHIFT_SECONDS)
        assert time.monotonic() - shifted <= SHIFT_SECONDS
        assert await page.evaluate("window.loadedOnce === true")
        await page.screenshot(tmp_path / "shifted.png")

        # Traffic through the caller: its rate shows on the edges (as the control plane read the caller's Envoy),
        # and v2's 5xx (every second answer) turn its edge red while v1's stays green.
        async def live() -> bool:
            for _ in range(10):  # bounded: 10 requests per look
                await m.get(sidecar, "reviews")
            return bool(
                await page.evaluate(
                    "(() => { const q = (h, to) => document.querySelector("
                    '`g.edge.health-${h}[data-to="VirtualNode/demo/${to}"] text.traffic`);'
                    " const v1 = q('healthy', 'reviews-v1'), v2 = q('failing', 'reviews-v2');"
                    " return !!(v1 && v2 && / rps · 0\\.0% 5xx/.test(v1.textContent)); })()"
                )
            )

        await eventually(live, timeout=20)
        assert await page.evaluate("window.loadedOnce === true")
        await page.screenshot(tmp_path / "traffic.png")

        # A proxy of frontend rejects its clusters: the node turns red with the message.
        nacker = AdsClient(m.plane.xds_port, "demo/frontend/nacker", "demo/frontend")
        await nacker.send(CLUSTER)
        response = await nacker.recv()
        await nacker.send(CLUSTER, version="", nonce=response.nonce, error="injected: cluster refused by this proxy")

        async def red() -> bool:
            return bool(
                await page.evaluate(
                    "!!document.querySelector('g.node.sync-NACKED[data-id=\"VirtualNode/demo/frontend\"]')"
                )
            )

        await eventually(red, timeout=10)
        shown = await page.evaluate("document.querySelector('g.node.sync-NACKED title').textContent")
        assert "injected: cluster refused by this proxy" in shown, shown
        await page.screenshot(tmp_path / "nacked.png")
        await nacker.close()
        assert page.console == [], page.console  # no script error in the page
    finally:
        await browser.stop()


async def test_dashboard_prints_the_url_or_one_line_saying_how_to_reach_it(mesh_factory):
    from meshctl.devtools.envoy_process import free_port
    from tests.e2e.test_explain import run_meshctl

    m: Mesh = await mesh_factory()
    write(m.dir / "mesh.yaml", service("reviews"))
    await m.start()
    admin = f"http://127.0.0.1:{m.plane.admin_port}"
    code, out, err = await run_meshctl("dashboard", "--admin", admin)
    assert code == 0 and out.strip() == f"{admin}/ui/", (out, err)
    code, out, err = await run_meshctl("dashboard", "--admin", f"http://127.0.0.1:{free_port()}")
    assert code != 0 and len(err.strip().splitlines()) == 1 and "port-forward svc/meshctl 19000" in err, err
    assert "Traceback" not in err


async def test_the_explain_form_and_meshctl_explain_agree(mesh_factory, tmp_path):
    """The page's explain form asks the control plane what `meshctl explain` computes: for each request, the same
    virtual host, the same matched route and the same verdict on every route."""
    import json

    from tests.e2e.test_explain import run_meshctl

    m: Mesh = await mesh_factory()
    await m.app("v1")
    await m.app("v2")
    beta = route("reviews-beta", "reviews", {"reviews-v2": 100}, priority=10,
                 match={"prefix": "/", "headers": [{"name": "x-user", "match": {"exact": "beta"}}]})  # fmt: skip
    write(m.dir / "mesh.yaml", *docs(m, (90, 10)), beta)
    await m.start()
    admin = f"http://127.0.0.1:{m.plane.admin_port}"
    requests = [
        ("GET", "http://reviews.demo/", []),
        ("POST", "http://reviews.demo/x", ["x-user: beta"]),
        ("GET", "http://nowhere.example/", []),
    ]
    browser = Browser(tmp_path / "chromium")
    await browser.start()
    try:
        page = await browser.page(f"{admin}/ui/")
        # The form answers once the page's module has run (it draws the graph after wiring the form): not before.
        await eventually(
            lambda: page.evaluate("!!(document.documentElement && document.documentElement.dataset.version)"), 20
        )
        for method, url, headers in requests:
            before = await page.evaluate("document.getElementById('explain').dataset.answered || ''")
            await page.evaluate(
                "(() => { const f = document.getElementById('explain');"
                f" f.from.value = 'demo/frontend'; f.method.value = {json.dumps(method)};"
                f" f.url.value = {json.dumps(url)}; f.headers.value = {json.dumps('; '.join(headers))};"
                " f.requestSubmit(); })()"
            )

            async def answered(before: str = before) -> bool:
                return (await page.evaluate("document.getElementById('explain').dataset.answered || ''")) != before

            await eventually(answered, timeout=10)
            shown = await page.evaluate(
                "({matched: document.getElementById('explain-answer').dataset.matched,"
                " rows: [...document.querySelectorAll('#explain-routes tbody tr')].map(tr =>"
                " [...tr.children].map(td => td.textContent))})"
            )
            args = ["explain", "--admin", admin, "--from", "demo/frontend", "-o", "json", method, url]
            for h in headers:
                args += ["-H", h]
            _, out, err = await run_meshctl(*args)
            assert out, err
            cli = json.loads(out)
            assert (shown["matched"] or None) == cli["matched"], (url, shown, cli)
            assert [r[1] for r in shown["rows"]] == [r["name"] for r in cli["routes"]], (url, shown, cli)
            assert [r[3] == "match" for r in shown["rows"]] == [r["failure"] is None for r in cli["routes"]]
        await page.screenshot(tmp_path / "explain.png")

        # The routes table of a Service: the routes `meshctl get routes` lists, in the same order.
        await page.evaluate(
            "(() => { const s = document.getElementById('service'); s.value = 'demo/reviews';"
            " s.dispatchEvent(new Event('change')); })()"
        )

        async def listed() -> bool:
            return bool(
                await page.evaluate("document.querySelector('#routes tbody').dataset.service === 'demo/reviews'")
            )

        await eventually(listed, timeout=10)
        rows = await page.evaluate(
            "[...document.querySelectorAll('#routes tbody tr')].map(tr => [...tr.children].map(td => td.textContent))"
        )
        _, out, err = await run_meshctl("get", "routes", "reviews", "-n", "demo", "--admin", admin, "-o", "json")
        assert out, err
        (vh,) = json.loads(out)["virtualHosts"]
        assert [r[2] for r in rows] == [r["name"] for r in vh["routes"]], (rows, vh)
        assert "header x-user exact beta" in rows[0][3], rows
        assert page.console == [], page.console
    finally:
        await browser.stop()


async def test_no_serious_accessibility_violation_and_a_shadowed_route_shows_its_witness(mesh_factory, tmp_path):
    """axe-core (tests/vendor) over the drawn page, NACK and problems shown: no serious or critical violation. The
    Problems list names a shadowed Route with the witness request that proves it."""
    from pathlib import Path

    m: Mesh = await mesh_factory()
    await m.app("v1")
    await m.app("v2")
    hidden = route("reviews-hidden", "reviews", {"reviews-v2": 100}, priority=20, match={"prefix": "/api"})
    catch_all = route("reviews-all", "reviews", {"reviews-v1": 100}, priority=10, match={"prefix": "/"})
    write(m.dir / "mesh.yaml", *docs(m, (90, 10))[:-1], catch_all, hidden)
    await m.start()
    browser = Browser(tmp_path / "chromium")
    await browser.start()
    try:
        page = await browser.page("about:blank")
        await page.call("Page.setBypassCSP", enabled=True)  # axe evaluates code the page's CSP would refuse
        await page.call("Page.navigate", url=f"http://127.0.0.1:{m.plane.admin_port}/ui/")
        await eventually(
            lambda: page.evaluate("!!(document.documentElement && document.documentElement.dataset.version)"), 20
        )
        problems = await page.evaluate("[...document.querySelectorAll('#problems li')].map(li => li.textContent)")
        shadowed = [p for p in problems if p.startswith("Route demo/reviews-hidden")]
        assert shadowed and "Reachable" in shadowed[0] and "/api" in shadowed[0], problems

        axe = (Path(__file__).parents[1] / "vendor" / "axe-core" / "axe.min.js").read_text()
        await page.evaluate(axe)
        violations = await page.evaluate(
            "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
            "v => ({id: v.id, impact: v.impact, nodes: v.nodes.length})))"
        )
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert serious == [], violations
        await page.screenshot(tmp_path / "problems.png")
    finally:
        await browser.stop()
