"""Traffic figures collected by the control plane (issue 35): every connected Envoy's requests, 5xx responses and
latency histogram per upstream cluster, read from its Prometheus stats port, so that the web view and ``meshctl
shift --steps`` need nothing but the admin API (one port-forward in a cluster, not one per caller).

Each target is a cluster of its own (``namespace/virtualnode/port``), so a caller's outbound cluster stats describe
an edge of the mesh. Cost is bounded: a round every ``interval`` seconds and only while someone reads the figures
(a page or a shift asked within ``idle_after`` seconds), Envoy filters its output to three stats of used clusters,
at most ``concurrency`` scrapes in flight with a timeout each, and the text is parsed in a worker thread, not on the
loop that serves xDS (docs/benchmarks.md section 17 measures it at 1,000 proxies).

A window is the difference between two readings of the same proxy; a proxy whose counters went down restarted and
counts from zero. p99 is the upper bound of the histogram bucket that holds the 99th percentile of the merged
bucket deltas (as Prometheus' histogram_quantile without interpolation: conservative by at most one bucket).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

__all__ = [
    "STATS_FILTER",
    "ClusterWindow",
    "Counters",
    "EdgeFigures",
    "Reading",
    "Target",
    "TrafficCollector",
    "counters",
    "counters_from_json",
    "counters_json",
    "edge_health",
    "merge_figures",
    "parse_cluster_stats",
    "window",
]

log = logging.getLogger(__name__)

# Envoy's /stats/prometheus?filter= matches the stats' own names (cluster.<name>.upstream_rq_5xx), before tags become
# labels. Without it one sidecar answers with hundreds of kilobytes (istio#29110). Our clusters' names end with a port
# (ns/node/8080, service|ns/name|80): that also leaves out the "external." copy of each stat, which doubles the text.
STATS_FILTER = r"^cluster\..*[/|][0-9]+\.upstream_rq_(completed|5xx|time)$"

_BOUNDS: dict[tuple[float, ...], tuple[float, ...]] = {}
_LE: dict[str, float] = {}  # a bucket bound's text -> its value
_MAX_SHARED = 1000  # entries in each of the two above


# One caller's cumulative counts to one cluster since its Envoy started: (requests, 5xx responses, latency bucket
# upper bounds in ms ascending (one tuple shared by all: _BOUNDS), cumulative count at each bound). A plain tuple of
# numbers and tuples of numbers, which the garbage collector stops tracking: 20,000 are made each round at 1,000
# proxies, and as objects it tracks (a class, a NamedTuple) they made full collections of 30-80 ms with the GIL held
# several times a round (bench 17).
Counters = tuple[float, float, tuple[float, ...], tuple[float, ...]]
REQUESTS: Final = 0
ERRORS: Final = 1
BOUNDS: Final = 2
COUNTS: Final = 3


def counters(
    requests: float, errors: float, bounds: tuple[float, ...] = (), counts: tuple[float, ...] = ()
) -> Counters:
    return (requests, errors, bounds, counts)


# Whole-text searches (in C) for the lines as Envoy writes them (its labels always in this order; tested against a
# real Envoy). 1,000 proxies' text is read every round: a line-by-line loop in Python takes twice as long,
# prometheus_client's parser 30 times.
_COMPLETED = re.compile(r'^envoy_cluster_upstream_rq_completed\{envoy_cluster_name="([^"]*)"\} (\S+)$', re.M)
_5XX = re.compile(
    r'^envoy_cluster_upstream_rq_xx\{envoy_response_code_class="5",envoy_cluster_name="([^"]*)"\} (\S+)$', re.M
)
_BUCKET = re.compile(
    r'^envoy_cluster_upstream_rq_time_bucket\{envoy_cluster_name="([^"]*)",le="([^"]*)"\} (\S+)$', re.M
)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _shared_bounds(bounds: tuple[float, ...]) -> tuple[float, ...]:
    """One tuple per set of bucket bounds (Envoy's defaults: one for all), at most 1,000 kept: a stats port that
    makes up new bounds each round must not grow the control plane's memory."""
    if bounds in _BOUNDS or len(_BOUNDS) < _MAX_SHARED:
        return _BOUNDS.setdefault(bounds, bounds)
    return bounds


def parse_cluster_stats(text: str) -> dict[str, Counters]:
    """Per cluster: the counters in one Envoy's Prometheus text (other lines are skipped, never an error)."""
    requests = {c: v for c, raw in _COMPLETED.findall(text) if (v := _number(raw)) is not None}
    errors = {c: v for c, raw in _5XX.findall(text) if (v := _number(raw)) is not None}
    bounds: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[float]] = defaultdict(list)
    le_of = _LE
    for cluster, le, raw in _BUCKET.findall(text):
        bound = le_of.get(le)
        if bound is None:
            bound = _number(le)
            if bound is None:
                continue
            if len(le_of) < _MAX_SHARED:
                le_of[le] = bound
        value = _number(raw)
        if value is not None:
            bounds[cluster].append(bound)
            counts[cluster].append(value)
    out = {}
    for cluster, total in requests.items():
        b, n = bounds.get(cluster, []), counts.get(cluster, [])
        if any(x > y for x, y in itertools.pairwise(b)):  # Envoy writes them ascending; anyone else may not
            pairs = sorted(zip(b, n, strict=True))
            b, n = [x for x, _ in pairs], [y for _, y in pairs]
        out[cluster] = (total, errors.get(cluster, 0.0), _shared_bounds(tuple(b)), tuple(n))
    return out


def counters_json(c: Counters) -> dict[str, Any]:
    return {
        "requests": c[REQUESTS],
        "errors": c[ERRORS],
        "buckets": [["+Inf" if math.isinf(le) else le, n] for le, n in zip(c[BOUNDS], c[COUNTS], strict=True)],
    }


def counters_from_json(doc: Mapping[str, Any]) -> Counters:
    pairs = [(math.inf if le == "+Inf" else float(le), float(n)) for le, n in doc.get("buckets", ())]
    return (float(doc["requests"]), float(doc["errors"]), tuple(le for le, _ in pairs), tuple(n for _, n in pairs))


@dataclass(frozen=True)
class ClusterWindow:
    requests: int
    errors: int
    p99_ms: float | None  # None: no requests

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window(
    before: Mapping[tuple[str, str], Counters],
    after: Mapping[tuple[str, str], Counters],
    clusters: set[str],
    read_before: set[str] | None = None,
) -> ClusterWindow:
    """Requests, 5xx and p99 to ``clusters`` between two readings keyed by (proxy, cluster), summed over the
    proxies. ``read_before``: the proxies the first reading read; one it did not (new, or unreachable then) has
    counters from before the window and is left out."""
    tally = _Tally()
    for (_, cluster), growth in _growths(before, after, read_before):
        if cluster in clusters:
            tally.add(*growth)
    return ClusterWindow(int(tally.requests), int(tally.errors), tally.histogram.p99())


def _growths(
    before: Mapping[tuple[str, str], Counters],
    after: Mapping[tuple[str, str], Counters],
    read_before: set[str] | None,
) -> Iterator[tuple[tuple[str, str], tuple[float, float, tuple[float, ...], tuple[float, ...]]]]:
    """Per (proxy, cluster) of ``after``: (requests, 5xx, bucket bounds, bucket counts) since ``before``. A proxy
    ``before`` did not read is left out (its counters hold more than the window); a cluster it had not used yet,
    or a proxy whose counters went down (it restarted), counts from zero."""
    for key, now in after.items():
        if read_before is not None and key[0] not in read_before:
            continue
        start = before.get(key)
        if start is None or now[REQUESTS] < start[REQUESTS]:
            start = _ZERO
        growth = (now[REQUESTS] - start[REQUESTS], max(0.0, now[ERRORS] - start[ERRORS]))
        yield key, (*growth, now[BOUNDS], _growth(now, start))


_ZERO = counters(0.0, 0.0)


def _growth(now: Counters, start: Counters) -> tuple[float, ...]:
    """Each bucket's count in ``now`` less in ``start`` (the same bounds: shared, see _BOUNDS)."""
    if not start[COUNTS]:
        return now[COUNTS]
    if start[BOUNDS] is now[BOUNDS] or start[BOUNDS] == now[BOUNDS]:
        return tuple(max(0.0, a - b) for a, b in zip(now[COUNTS], start[COUNTS], strict=True))
    earlier = dict(zip(start[BOUNDS], start[COUNTS], strict=True))
    return tuple(max(0.0, n - earlier.get(le, 0.0)) for le, n in zip(now[BOUNDS], now[COUNTS], strict=True))


class _Histogram:
    """Cumulative bucket counts added up; nearly always over one set of bounds (Envoy's defaults). Histograms with
    other bounds are kept apart and added on the union of the bounds, each counting at a bound what it had at its
    own largest bound below it (conservative: a p99 never comes out lower than one of them has it)."""

    __slots__ = ("bounds", "counts", "others")

    def __init__(self) -> None:
        self.bounds: tuple[float, ...] = ()
        self.counts: list[float] = []
        self.others: list[tuple[tuple[float, ...], tuple[float, ...]]] = []

    def add(self, bounds: tuple[float, ...], counts: Iterable[float]) -> None:
        if not bounds:
            return
        if not self.bounds:
            self.bounds, self.counts = bounds, list(counts)
        elif bounds is self.bounds or bounds == self.bounds:
            into = self.counts
            for i, n in enumerate(counts):
                into[i] += n
        else:
            self.others.append((bounds, tuple(counts)))

    def items(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if not self.others:
            return self.bounds, tuple(self.counts)
        parts = [(self.bounds, tuple(self.counts)), *self.others]
        union = tuple(sorted({le for bounds, _ in parts for le in bounds}))
        totals = [0.0] * len(union)
        for bounds, counts in parts:
            for i, le in enumerate(union):
                at = bisect.bisect_right(bounds, le)
                totals[i] += counts[at - 1] if at else 0.0
        return union, tuple(totals)

    def p99(self) -> float | None:
        """The upper bound of the bucket holding the 99th percentile (None: no requests counted)."""
        bounds, counts = self.items()
        if not counts or counts[-1] <= 0:
            return None
        return next(le for le, n in zip(bounds, counts, strict=True) if n >= 0.99 * counts[-1])


class _Tally:
    """Requests, 5xx and latency buckets added up: of a window, an edge, a round."""

    __slots__ = ("errors", "histogram", "requests")

    def __init__(self) -> None:
        self.requests = self.errors = 0.0
        self.histogram = _Histogram()

    def add(self, requests: float, errors: float, bounds: tuple[float, ...], counts: Iterable[float]) -> None:
        self.requests += requests
        self.errors += errors
        self.histogram.add(bounds, counts)

    def figures(self, seconds: float) -> EdgeFigures:
        return (self.requests, self.errors, seconds, *self.histogram.items())


@dataclass(frozen=True)
class Target:
    """A connected proxy whose stats the control plane can read."""

    node_id: str
    group: str
    url: str  # http://address:port/stats/prometheus


@dataclass(frozen=True)
class Reading:
    """One round: every reachable proxy's counters, keyed by (node id, cluster)."""

    started_at: float  # wall clock, the control plane's
    finished_at: float
    counters: Mapping[tuple[str, str], Counters]
    groups: Mapping[str, str]  # node id -> group
    unreachable: tuple[str, ...]  # node ids

    @property
    def read(self) -> set[str]:
        """The proxies this round read."""
        return set(self.groups) - set(self.unreachable)


# Traffic from one group of callers to one cluster in a window: (requests, 5xx, seconds, latency bucket bounds in
# ms, requests at or under each bound). A plain tuple, as Counters, for the collector.
EdgeFigures = tuple[float, float, float, tuple[float, ...], tuple[float, ...]]
SECONDS: Final = 2
FIGURE_BOUNDS: Final = 3
FIGURE_COUNTS: Final = 4


@dataclass(frozen=True)
class _Window:
    """One round's traffic by (caller group, cluster), since the round before."""

    started_at: float
    seconds: float
    deltas: dict[tuple[str, str], EdgeFigures]


# The graph's figures sum the rounds of the last quarter minute: Envoy merges its latency histograms only at its
# stats flush (every 5 s), so a single short round would show a p99 one time in ten and none otherwise.
EDGE_WINDOW = 15.0


class TrafficCollector:
    """Reads the connected proxies' stats every ``interval`` seconds while someone wants the figures."""

    def __init__(
        self,
        targets: Callable[[], Iterable[Target]],
        *,
        interval: float = 5.0,
        timeout: float = 2.0,
        concurrency: int = 64,
        idle_after: float = 120.0,
    ) -> None:
        self._targets = targets
        self.interval = interval
        self.timeout = timeout
        self.concurrency = concurrency
        self.idle_after = idle_after
        self._latest: Reading | None = None  # (only the latest: 20,000 counters at 1,000 proxies)
        self._recent: deque[_Window] = deque()  # the rounds summed into the graph's figures
        self._edges: dict[tuple[str, str], EdgeFigures] = {}
        self._wanted_at = -math.inf
        self._woken = asyncio.Event()
        self.rounds = 0  # completed rounds
        self.round_seconds = 0.0  # how long the last round took (reads and parsing)
        self.read_bytes = 0  # how much text the last round read

    def want(self) -> None:
        """A reader asked: collect (again) if idle."""
        self._wanted_at = time.monotonic()
        self._woken.set()

    @property
    def latest(self) -> Reading | None:
        return self._latest

    def edges(self) -> Mapping[tuple[str, str], EdgeFigures]:
        """(caller group, cluster) -> traffic over the last ``EDGE_WINDOW`` seconds of rounds (the same mapping
        until the next round)."""
        return self._edges

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
        ) as session:
            while True:
                if time.monotonic() - self._wanted_at > self.idle_after:
                    self._latest, self._edges = None, {}  # figures that old would mislead; start afresh
                    self._recent.clear()
                    self._woken.clear()
                    await self._woken.wait()
                began = time.monotonic()
                try:
                    await self._round(session)
                except Exception:  # never a dead task: say it and try again next round
                    log.exception("collecting traffic figures failed")
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    async def _round(self, session: aiohttp.ClientSession) -> None:
        targets = {t.node_id: t for t in self._targets()}
        started = time.time()

        async def one(target: Target) -> tuple[str, str | None]:
            try:
                async with session.get(target.url, params={"usedonly": "", "filter": STATS_FILTER}) as r:
                    # (bytes decoded here: text() may guess the charset of a body that names none, at a cost)
                    return target.node_id, (await r.read()).decode(errors="replace") if r.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return target.node_id, None

        texts = await asyncio.gather(*(one(t) for t in targets.values()))
        self.read_bytes = sum(len(text) for _, text in texts if text is not None)
        # Parsing 1,000 proxies' text takes ~0.6 s: in one worker thread, not on the serving loop (a thread per
        # proxy made the loop wait for the GIL more often: p99 stall 42 ms instead of 16, bench 17).
        parsed = await asyncio.to_thread(_parse_all, texts)
        reading = Reading(
            started_at=started,
            finished_at=time.time(),
            counters=parsed,
            groups={node: t.group for node, t in targets.items()},
            unreachable=tuple(sorted(node for node, text in texts if text is None)),
        )
        previous, self._latest = self._latest, reading
        if previous is not None:
            deltas = await asyncio.to_thread(_edges, previous, reading)
            self._recent.append(_Window(reading.started_at, reading.started_at - previous.started_at, deltas))
        span = max(EDGE_WINDOW, 3 * self.interval)
        while self._recent and reading.started_at - self._recent[0].started_at >= span:
            self._recent.popleft()
        self._edges = await asyncio.to_thread(_sum_rounds, [(r.seconds, r.deltas) for r in self._recent])
        self.rounds += 1
        self.round_seconds = time.time() - started


def _parse_all(texts: Iterable[tuple[str, str | None]]) -> dict[tuple[str, str], Counters]:
    out: dict[tuple[str, str], Counters] = {}
    for node, text in texts:
        if text is not None:
            for cluster, counts in parse_cluster_stats(text).items():
                out[(node, cluster)] = counts
    return out


def _edges(before: Reading, after: Reading) -> dict[tuple[str, str], EdgeFigures]:
    """Per (caller group, cluster): what its proxies sent between two readings."""
    seconds = max(1e-3, after.started_at - before.started_at)
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    for (node, cluster), growth in _growths(before.counters, after.counters, before.read):
        tallies[(after.groups.get(node, ""), cluster)].add(*growth)
    return {key: tally.figures(seconds) for key, tally in tallies.items()}


def _sum_rounds(
    rounds: Iterable[tuple[float, Mapping[tuple[str, str], EdgeFigures]]],
) -> dict[tuple[str, str], EdgeFigures]:
    """Per key, the rounds' figures added up; their seconds are the span all the rounds cover."""
    tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    seconds = 0.0
    for round_seconds, deltas in rounds:
        seconds += round_seconds
        for key, f in deltas.items():
            tallies[key].add(f[REQUESTS], f[ERRORS], f[FIGURE_BOUNDS], f[FIGURE_COUNTS])
    return {key: tally.figures(seconds) for key, tally in tallies.items()}


def merge_figures(figures: Iterable[EdgeFigures]) -> dict[str, float | None] | None:
    """Several (group, cluster) figures as one edge: requests per second, 5xx rate, p99 ms; None: no traffic."""
    tally = _Tally()
    seconds = 0.0
    for f in figures:
        seconds = max(seconds, f[SECONDS])
        tally.add(f[REQUESTS], f[ERRORS], f[FIGURE_BOUNDS], f[FIGURE_COUNTS])
    if seconds == 0.0:
        return None
    return {
        "rps": round(tally.requests / seconds, 2),
        "errorRate": round(tally.errors / tally.requests, 4) if tally.requests else 0.0,
        "p99Ms": tally.histogram.p99(),
        "requests": tally.requests,
    }


# Health of an edge from its 5xx rate, Kiali's defaults: any 5xx degraded, 10 % failing (docs/web-view.md).
DEGRADED_ABOVE = 0.0
FAILING_AT = 0.10


def edge_health(figures: Mapping[str, float | None] | None) -> str:
    """idle (no requests in the window), healthy, degraded or failing."""
    if figures is None or not figures.get("requests"):
        return "idle"
    rate = figures.get("errorRate") or 0.0
    return "failing" if rate >= FAILING_AT else "degraded" if rate > DEGRADED_ABOVE else "healthy"
