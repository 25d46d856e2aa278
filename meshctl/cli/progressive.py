"""``meshctl shift ROUTE --to NEW=100 --steps 10,25,50,100 ...``: a progressive shift with automatic rollback.

At each step the new target gets the step's share (the stable targets keep their proportions of the rest), every
caller must ACK it, then the callers' own Envoys are read for ``--interval``: requests, 5xx rate and p99 to the new
target's cluster and to the stable ones, in the same window. The control plane reads the callers' stats and serves
them (``/api/v1/traffic``): the shift needs the admin address only, as every other command. Fewer than
``--min-requests`` to the new target: the step is held (and said so) for up to ``--max-hold``, then rolled back
(too little traffic to judge is not a pass). A threshold crossed: the original weights are restored, and the
rollback is reported done only once every caller ACKed them. Ctrl-C restores the original weights too.
``--dry-run`` prints the plan.
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
from dataclasses import dataclass
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from meshctl.admin.traffic import ClusterWindow, window
from meshctl.cli.client import AdminClient, CliError
from meshctl.cli.output import console, table
from meshctl.cli.shift_plan import Shift, callers, wait_for_proxies
from meshctl.cli.traffic import next_round, read_traffic
from meshctl.translate.endpoints import virtual_node_of
from meshctl.translate.ir import group_node

__all__ = ["Guard", "parse_duration", "run_progressive", "step_weights"]


def parse_duration(text: str, flag: str) -> float:
    """``30s``, ``500ms``, ``2m`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if m is None:
        raise CliError(f"{flag} {text!r}: expected a duration like 30s, 500ms or 2m")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def parse_percent(text: str, flag: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", text)
    if m is None or float(m.group(1)) > 100:
        raise CliError(f"{flag} {text!r}: expected a percentage like 1%")
    return float(m.group(1)) / 100


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",")]
    except ValueError:
        raise CliError(f"--steps {text!r}: expected increasing percentages like 10,25,50,100") from None
    if not steps or any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] <= 0 or steps[-1] != 100:
        raise CliError(f"--steps {text!r}: expected increasing percentages ending at 100, like 10,25,50,100")
    return steps


@dataclass(frozen=True)
class Guard:
    interval: float
    max_error_rate: float
    max_p99_ms: float | None
    min_requests: int
    max_hold: float

    def verdict(self, canary: ClusterWindow) -> str | None:
        """Why the new target fails, or None."""
        if canary.error_rate > self.max_error_rate:
            return f"error rate {canary.error_rate:.1%} > {self.max_error_rate:.1%}"
        if self.max_p99_ms is not None and canary.p99_ms is not None and canary.p99_ms > self.max_p99_ms:
            return f"p99 {canary.p99_ms:g}ms > {self.max_p99_ms:g}ms"
        return None


def step_weights(original: dict[str, int], new: str, percent: int) -> dict[str, int]:
    """``new`` gets ``percent``; the others share the rest in their original proportions (whole numbers, sum 100)."""
    stable = {n: w for n, w in original.items() if n != new and w > 0}
    total = sum(stable.values())
    rest = 100 - percent
    weights = {n: (rest * w) // total for n, w in stable.items()} if total else {}
    if weights:
        largest = max(stable, key=stable.__getitem__)
        weights[largest] += rest - sum(weights.values())
    weights[new] = percent
    return {**{n: 0 for n in original}, **weights}


def _clusters_of(client: AdminClient, shift: Shift, nodes: set[str]) -> set[str]:
    """The clusters (namespace/virtualnode/port) the Route sends to, for these nodes."""
    table_ = client.get("/api/v1/routes", service=shift.service)
    return {
        t["cluster"]
        for vh in table_["virtualHosts"]
        for r in vh["routes"]
        for t in r["targets"]
        if virtual_node_of(t["cluster"]) in nodes
    }


def _callers(client: AdminClient, shift: Shift) -> list[dict[str, Any]]:
    """Connected proxies whose node group calls the Route's Service."""
    proxies = client.get("/api/v1/proxies")["proxies"]
    calling = callers(client, shift, proxies)
    return [p for p in proxies if group_node(p["group"]) in calling]


def _plan(shift: Shift, new: str, steps: list[int], guard: Guard, callers: list[dict[str, Any]]) -> None:
    out = console()
    rows: list[list[str | Text]] = []
    for i, percent in enumerate(steps):
        weights = step_weights(shift.before, new, percent)
        split = ", ".join(f"{n.split('/')[1]} {w}%" for n, w in weights.items() if w)
        rows.append([str(i + 1), f"{percent}%", split, f"after {guard.interval * i:g}s (at the earliest)"])
    out.print(Text(f"progressive shift of Route {shift.key} ({shift.service}, {shift.match}) to {new.split('/')[1]}"))
    out.print(table(["STEP", "NEW", "WEIGHTS", "STARTS"], rows))
    names = ", ".join(f"{p['node_id']}" + ("" if p.get("statsUrl") else " (no stats port!)") for p in callers)
    out.print(Text(f"callers read: {names or 'none connected'} (their stats, by the control plane)"))
    p99 = f", p99 <= {guard.max_p99_ms:g}ms" if guard.max_p99_ms is not None else ""
    out.print(
        Text(
            f"each step: every caller ACKs, then {guard.interval:g}s of traffic; pass if error rate <= "
            f"{guard.max_error_rate:.1%}{p99} on >= {guard.min_requests} requests to the new target; fewer: hold "
            f"up to {guard.max_hold:g}s, then roll back; failed: roll back to "
            + ", ".join(f"{n.split('/')[1]} {w}%" for n, w in shift.before.items())
        )
    )
    out.print(Text("dry run: nothing written", style="dim"))


def _observe(
    client: AdminClient, guard: Guard, canary: set[str], stable: set[str], label: str
) -> tuple[str, ClusterWindow, ClusterWindow]:
    """Watches one step; returns ('pass'|'fail:<why>'|'starved'|'blind:<why>', new-target window, stable window).
    The window opens at the control plane's first round that began after every caller ACKed the step (now, by
    its clock) and spans its rounds: ``--interval`` is the span of what was counted, not of the wait."""
    out = console()
    clusters = canary | stable
    acked_at = read_traffic(client, clusters).now
    start = next_round(client, clusters, acked_at, timeout=30)
    if start is None:
        return (
            "blind:the control plane read no caller's stats for 30s",
            ClusterWindow(0, 0, None),
            ClusterWindow(0, 0, None),
        )
    opened = start.started_at
    assert opened is not None  # (next_round returns a round that began)
    began = time.monotonic()
    # The control plane stopped reading (or cannot read the callers): the step cannot be judged; bounded.
    give_up = guard.interval + guard.max_hold + 3 * start.interval + 10
    held = False
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=out, transient=True
    ) as progress:
        task = progress.add_task(label, total=guard.interval)
        while True:
            time.sleep(min(0.25, guard.interval / 8, start.interval / 2))
            now = read_traffic(client, clusters)
            span = (now.started_at or opened) - opened
            new_w = window(start.counters, now.counters, canary, set(start.read))
            stable_w = window(start.counters, now.counters, stable, set(start.read))
            why = guard.verdict(new_w) if new_w.requests >= guard.min_requests else None
            if why is not None:
                return f"fail:{why}", new_w, stable_w  # no need to wait out the interval
            progress.update(task, completed=min(span, guard.interval))
            if span >= guard.interval and new_w.requests >= guard.min_requests:
                return "pass", new_w, stable_w
            if span >= guard.interval and not held:
                unread = f"; {len(now.unreachable)} callers' stats unreachable" if now.unreachable else ""
                out.print(
                    Text(
                        f"holding: only {new_w.requests} requests reached the new target in {span:.0f}s "
                        f"(--min-requests {guard.min_requests}); waiting for more traffic{unread}",
                        style="yellow",
                    )
                )
                held = True
            if span >= guard.interval + guard.max_hold or time.monotonic() - began > give_up:
                return "starved", new_w, stable_w


def _describe(name: str, w: ClusterWindow) -> str:
    p99 = f", p99 {w.p99_ms:g}ms" if w.p99_ms is not None else ""
    return f"{name}: {w.requests} requests, {w.error_rate:.1%} errors{p99}"


def _rollback(client: AdminClient, shift: Shift, reason: str, timeout: float) -> int:
    out = console()
    out.print(Text(f"rolling back: {reason}", style="bold red"))
    shift.apply(shift.before)
    done, report = wait_for_proxies(client, shift, shift.before, timeout)
    if done:
        original = ", ".join(f"{n.split('/')[1]} {w}%" for n, w in shift.before.items())
        out.print(Text(f"rolled back to {original}: {report}", style="red"))
        return 1
    out.print(Text(f"rollback written but not confirmed: {report}", style="bold red"))
    return 2


def run_progressive(args: argparse.Namespace, client: AdminClient, shift: Shift) -> int:
    new = [n for n, w in shift.after.items() if w == 100]
    if len(new) != 1:
        raise CliError("--steps: --to must give one VirtualNode 100, the target traffic moves to")
    target = new[0]
    steps = parse_steps(args.steps)
    guard = Guard(
        interval=parse_duration(args.interval, "--interval"),
        max_error_rate=parse_percent(args.max_error_rate, "--max-error-rate"),
        max_p99_ms=parse_duration(args.max_p99, "--max-p99") * 1000 if args.max_p99 else None,
        min_requests=args.min_requests,
        max_hold=parse_duration(args.max_hold, "--max-hold"),
    )
    callers = _callers(client, shift)
    if args.dry_run:
        _plan(shift, target, steps, guard, callers)
        return 0
    if not any(p.get("statsUrl") for p in callers):
        raise CliError(f"no caller of {shift.service} exposes a stats port to judge the new target by")
    stable_nodes = {n for n, w in shift.before.items() if w > 0 and n != target}
    out = console()
    try:
        for i, percent in enumerate(steps):
            weights = step_weights(shift.before, target, percent)
            shift.apply(weights)
            done, report = wait_for_proxies(client, shift, weights, args.timeout)
            if not done:
                return _rollback(client, shift, f"step {percent}%: {report}", args.timeout)
            label = f"step {i + 1}/{len(steps)}: {target.split('/')[1]} {percent}%"
            out.print(Text(f"{label}: {report}"))
            if percent == 100:
                out.print(Text(f"done: {target.split('/')[1]} takes 100% of {shift.key}", style="bold green"))
                return 0
            canary = _clusters_of(client, shift, {target})
            stable = _clusters_of(client, shift, stable_nodes)
            outcome, new_w, stable_w = _observe(client, guard, canary, stable, label)
            out.print(Text(f"  {_describe('new', new_w)}; {_describe('stable', stable_w)}"))
            if outcome.startswith(("fail:", "blind:")):
                return _rollback(client, shift, f"step {percent}%: {outcome.split(':', 1)[1]}", args.timeout)
            if outcome == "starved":
                return _rollback(
                    client,
                    shift,
                    f"step {percent}%: not enough traffic to judge ({new_w.requests} < {guard.min_requests} "
                    f"requests in {guard.interval + guard.max_hold:g}s)",
                    args.timeout,
                )
        return 0
    except KeyboardInterrupt:
        code = _rollback(client, shift, "interrupted (Ctrl-C)", args.timeout)
        return 130 if code == 1 else code
