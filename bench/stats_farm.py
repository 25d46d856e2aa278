"""Envoy stats for benchmark 17: ``python -m bench.stats_farm PORT PROXIES CLUSTERS SERVICES`` serves
``/p/<i>/stats/prometheus`` for proxy ``i``: what ``/stats/prometheus?usedonly&filter=...`` of a real Envoy
returns for ``CLUSTERS`` used clusters (the lines and labels Envoy 1.40 writes: requests, the 2xx/5xx classes,
Envoy's default latency buckets, sum, count), counters growing with time as if 20 requests per second flowed to
each cluster. A process of its own, so its CPU is not counted as the control plane's."""

from __future__ import annotations

import sys
import time

from aiohttp import web

BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
           3600000)  # fmt: skip
_START = time.monotonic()


def clusters_of(proxy: int, clusters: int, services: int) -> list[str]:
    """The proxy's clusters: both versions of clusters/2 services (svc-0 and others, as meshgen.with_clients)."""
    others = clusters // 2 - 1
    picked = sorted({0, *(1 + (proxy * others + k) % (services - 1) for k in range(others))})
    return [f"bench/svc-{i}-v{v}/8080" for i in picked for v in (1, 2)]


def text(proxy: int, clusters: int, services: int) -> str:
    n = int((time.monotonic() - _START) * 20) + 1
    lines = ["# TYPE envoy_cluster_upstream_rq_completed counter"]
    names = clusters_of(proxy, clusters, services)
    for c in names:
        lines.append(f'envoy_cluster_upstream_rq_completed{{envoy_cluster_name="{c}"}} {n}')
    lines.append("# TYPE envoy_cluster_upstream_rq_xx counter")
    for c in names:
        for code, count in (("2", n - n // 100), ("5", n // 100)):  # 1 % 5xx
            lines.append(
                f'envoy_cluster_upstream_rq_xx{{envoy_response_code_class="{code}",envoy_cluster_name="{c}"}} {count}'
            )
    lines.append("# TYPE envoy_cluster_upstream_rq_time histogram")
    for c in names:
        for le in BUCKETS:
            count = n if le >= 25 else n // 2
            lines.append(f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{c}",le="{le}"}} {count}')
        lines.append(f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{c}",le="+Inf"}} {n}')
        lines.append(f'envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name="{c}"}} {n * 9.5}')
        lines.append(f'envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{c}"}} {n}')
    return "\n".join(lines) + "\n"


def main() -> None:
    port, proxies, clusters, services = (int(a) for a in sys.argv[1:5])

    async def stats(request: web.Request) -> web.Response:
        proxy = int(request.match_info["i"])
        if not 0 <= proxy < proxies:
            raise web.HTTPNotFound()
        return web.Response(text=text(proxy, clusters, services))

    app = web.Application()
    app.router.add_get("/p/{i}/stats/prometheus", stats)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
