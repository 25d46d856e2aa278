"""Run the benchmarks: ``python -m bench.run [name ...]`` (all by default). Prints Markdown with the
machine and the command, ready for docs/benchmarks.md. Every load is bounded and on loopback."""

from __future__ import annotations

import argparse
import sys
import time

from bench import common

BENCHMARKS = {
    "translation": ("1. Translation", "bench.translation"),
    "incremental": ("2. Incremental update", "bench.incremental"),
    "fanout": ("3. Fan-out to ADS streams", "bench.fanout"),
    "convergence": ("4. Convergence with real Envoys", "bench.convergence"),
    "startup": ("5. Startup", "bench.startup"),
    "propagation": ("6. Route propagation under load (manifest and Kubernetes sources)", "bench.propagation"),
    "kubesource": ("7. Kubernetes source at scale: Pod updates, loop stalls, memory", "bench.kubesource"),
    "churn": ("8. Memory under endpoint churn", "bench.churn"),
    "manifestchurn": ("9. The manifest source under churn", "bench.manifestchurn"),
    "identity": ("10. Workload identities: issuing, a rotation wave", "bench.identity"),
    "tokenreconnect": ("11. Token-authenticated proxies back after a control-plane restart", "bench.tokenreconnect"),
    "authz": ("12. Authorization policies: translation and propagation", "bench.authz"),
    "gamma": ("13. Gateway API routes (GAMMA) against Routes: translation and propagation", "bench.gamma"),
    "proxyless": ("14. 1,000 proxyless gRPC clients: a change to all of them, control-plane RSS", "bench.proxyless"),
    "cloudmap": ("15. Cloud Map discovery of 1,000 services: calls per second, registrations seen", "bench.cloudmap"),
    "webview": ("16. The web view of 1,000 services in headless chromium: drawn, loop stalls", "bench.webview"),
    "traffic": ("17. Traffic figures of 1,000 proxies collected by the control plane", "bench.traffic"),
    "edge": (
        "18. An edge gateway serving 10,000 routes: translation, memory, a route change's propagation",
        "bench.edge",
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="default: all")
    args = parser.parse_args()
    names = args.names or list(BENCHMARKS)
    print(f"Machine: {common.machine()}; Envoy {common.envoy_version()}")
    print(f"Command: python -m bench.run {' '.join(args.names)}".rstrip())
    for name in names:
        title, module = BENCHMARKS[name]
        started = time.monotonic()
        result = __import__(module, fromlist=["run"]).run()
        print(f"\n### {title} ({time.monotonic() - started:.0f} s)\n\n{result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
