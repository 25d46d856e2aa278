"""boto3 clients for the reconciler: the default credential chain and standard configuration, client-side rate
limits per operation, retries, and Prometheus counters of every call.

Credentials come from boto3's default chain (IRSA web identity and EKS Pod Identity included), region and endpoint
from its standard settings (``AWS_REGION``, ``AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2``, ``AWS_ENDPOINT_URL``), so
tests point it at moto with no flag of ours. boto3 is synchronous: every call here runs in a worker thread, never on
the event loop, so the blocking sleep of a rate limit is harmless."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from prometheus_client import CollectorRegistry, Counter, Histogram

from meshctl.version import CONTROLLER_USER_AGENT

__all__ = ["DEFAULT_LIMITS", "AwsClients", "IngressMetrics", "RateLimit", "RateLimiter", "make_clients"]

_THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"})


@dataclass(frozen=True)
class RateLimit:
    pattern: str  # a regex on the operation name
    rate: float  # tokens per second
    burst: int


# LBC's defaults (pkg/aws/throttle/defaults.go); an operation takes tokens from the first rule that matches only
# (LBC PR #4641: RegisterTargets also paying into a catch-all bucket halved its rate).
DEFAULT_LIMITS = (
    RateLimit(r"^(Register|Deregister)Targets$", 4, 20),
    RateLimit(r"^Describe", 50, 200),
    RateLimit(r"^(Modify|Create|Delete|Set|Add|Remove)", 3, 20),
)


class RateLimiter:
    """A token bucket per rule, taken before each attempt is signed."""

    def __init__(self, limits: tuple[RateLimit, ...] = DEFAULT_LIMITS) -> None:
        self._rules = [(re.compile(limit.pattern), limit) for limit in limits]
        self._tokens = {limit.pattern: float(limit.burst) for limit in limits}
        self._stamp = {limit.pattern: time.monotonic() for limit in limits}
        self._lock = threading.Lock()
        self.waited_seconds = 0.0

    def take(self, operation: str) -> None:
        limit = next((lim for rx, lim in self._rules if rx.search(operation)), None)
        if limit is None:
            return
        while True:
            with self._lock:
                now = time.monotonic()
                tokens = min(limit.burst, self._tokens[limit.pattern] + (now - self._stamp[limit.pattern]) * limit.rate)
                self._stamp[limit.pattern] = now
                if tokens >= 1:
                    self._tokens[limit.pattern] = tokens - 1
                    return
                self._tokens[limit.pattern] = tokens
                wait = (1 - tokens) / limit.rate
            self.waited_seconds += wait
            time.sleep(wait)

    def install(self, client: Any) -> None:
        def before_sign(operation_name: str, **_: Any) -> None:
            self.take(operation_name)

        client.meta.events.register("before-sign.*.*", before_sign)


@dataclass
class IngressMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.calls = Counter(
            "meshctl_ingress_aws_calls", "AWS API attempts, by operation.", ["operation"], registry=self.registry
        )
        self.errors = Counter(
            "meshctl_ingress_aws_errors",
            "AWS API attempts that failed, by operation and error code.",
            ["operation", "code"],
            registry=self.registry,
        )
        self.throttles = Counter(
            "meshctl_ingress_aws_throttles", "AWS API attempts throttled by AWS.", ["operation"], registry=self.registry
        )
        self.reconcile = Histogram(
            "meshctl_ingress_reconcile_duration_seconds",
            "One reconcile pass of a load balancer stack, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "meshctl_ingress_reconcile_errors",
            "Reconcile passes that failed, by kind.",
            ["kind"],
            registry=self.registry,
        )

    def install(self, client: Any) -> None:
        """Counts every attempt (``needs-retry`` fires once per attempt, with its response or exception)."""

        def attempt(response: Any, operation: Any, caught_exception: Any = None, **_: Any) -> None:
            name = operation.name
            self.calls.labels(name).inc()
            if caught_exception is not None:
                self.errors.labels(name, type(caught_exception).__name__).inc()
                return
            if response is None:
                return
            http, parsed = response
            if http.status_code >= 400:
                code = str((parsed or {}).get("Error", {}).get("Code") or http.status_code)
                self.errors.labels(name, code).inc()
                if code in _THROTTLE_CODES:
                    self.throttles.labels(name).inc()

        client.meta.events.register("needs-retry.*.*", attempt)


@dataclass
class AwsClients:
    elbv2: Any
    ec2: Any
    # Reads target health: the ELBv2 client itself, or in tests a scripted fake with the same method.
    health: Any
    acm: Any = None  # certificate discovery (None: no discovery)


def make_clients(
    *,
    metrics: IngressMetrics | None = None,
    limiter: RateLimiter | None = None,
    max_attempts: int = 10,
    retry_mode: str = "standard",
    session: Any = None,
) -> AwsClients:
    session = session or boto3.session.Session()
    config = Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        user_agent_extra=CONTROLLER_USER_AGENT,  # CloudTrail's userAgent tells the controller's calls apart
    )
    elbv2 = session.client("elbv2", config=config)
    ec2 = session.client("ec2", config=config)
    acm = session.client("acm", config=config)
    limiter = limiter or RateLimiter()
    limiter.install(elbv2)
    if metrics is not None:
        metrics.install(elbv2)
        metrics.install(ec2)
        metrics.install(acm)
    return AwsClients(elbv2=elbv2, ec2=ec2, health=elbv2, acm=acm)
