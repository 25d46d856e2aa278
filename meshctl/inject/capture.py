"""Traffic capture: the iptables rules ``meshctl capture`` writes in a pod's network namespace (App Mesh style).

- Outbound TCP to any non-local address goes to Envoy's egress port, except connections made by Envoy's own uid
  (its upstream and xDS traffic) and the ignored ports and CIDRs.
- Inbound TCP to the app's ports, from other hosts, goes to Envoy's ingress port.
- Loopback is never captured (``addrtype LOCAL``), so the app's own calls to 127.0.0.1 and Envoy's calls to the
  app (127.0.0.1:<app port>) stay direct. UDP (DNS) is never captured.

The rules live in two chains of the nat table that this program owns; running it again rewrites them (idempotent)
and adds the jumps only once. IPv4 only.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "INBOUND_CHAIN",
    "OUTBOUND_CHAIN",
    "CaptureConfig",
    "CaptureError",
    "apply_capture",
    "capture_arguments",
    "capture_rules",
    "parse_ports",
    "split_list",
]

INBOUND_CHAIN = "MESHCTL_INBOUND"
OUTBOUND_CHAIN = "MESHCTL_OUTPUT"
_MULTIPORT_MAX = 15  # iptables' multiport match takes at most 15 ports


class CaptureError(Exception):
    """The rules could not be written: one line for the user."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureConfig:
    proxy_uid: int = 1337
    egress_port: int = 15001
    ingress_port: int = 15000
    app_ports: tuple[int, ...] = ()  # inbound ports redirected to the ingress port; none: inbound not captured
    ignored_ports: tuple[int, ...] = (22,)  # outbound destination ports left alone
    ignored_cidrs: tuple[str, ...] = ()  # outbound destinations left alone (e.g. the instance metadata service)

    def __post_init__(self) -> None:
        for port in (self.egress_port, self.ingress_port, *self.app_ports, *self.ignored_ports):
            if not 1 <= port <= 65535:
                raise CaptureError(f"port {port} is outside 1-65535")
        if self.egress_port in self.app_ports or self.ingress_port in self.app_ports:
            raise CaptureError("an app port cannot be Envoy's egress or ingress port (the traffic would loop)")
        for cidr in self.ignored_cidrs:
            try:
                network = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise CaptureError(f"ignored CIDR {cidr!r} is not an address or network") from None
            if network.version != 4:
                raise CaptureError(f"ignored CIDR {cidr!r} is IPv6: capture is IPv4 only")


def split_list(text: str | None) -> tuple[str, ...]:
    """``"a, b,,"`` -> ("a", "b"); empty or None -> ()."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def parse_ports(text: str | None) -> tuple[int, ...]:
    """``"8080,9090"`` -> (8080, 9090); empty or None -> (). The range is CaptureConfig's to check."""
    ports = []
    for part in split_list(text):
        if not part.isdigit():
            raise CaptureError(f"port {part!r} is not a number")
        ports.append(int(part))
    return tuple(dict.fromkeys(ports))


def capture_arguments(config: CaptureConfig) -> list[str]:
    """The ``meshctl capture`` flags that write ``config`` (what the injected init container runs)."""
    args = ["--proxy-uid", str(config.proxy_uid)]
    args += ["--egress-port", str(config.egress_port), "--ingress-port", str(config.ingress_port)]
    if config.app_ports:
        args += ["--app-ports", ",".join(map(str, config.app_ports))]
    args += ["--ignored-ports", ",".join(map(str, config.ignored_ports))]
    if config.ignored_cidrs:
        args += ["--ignored-cidrs", ",".join(config.ignored_cidrs)]
    return args


def _chunks(ports: Sequence[int]) -> Iterable[str]:
    for i in range(0, len(ports), _MULTIPORT_MAX):
        yield ",".join(str(p) for p in ports[i : i + _MULTIPORT_MAX])


def jump_rules(config: CaptureConfig) -> list[str]:
    """The rules in the built-in chains that send traffic to ours (each added once)."""
    jumps = [f"-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j {OUTBOUND_CHAIN}"]
    if config.app_ports:
        jumps.insert(0, f"-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j {INBOUND_CHAIN}")
    return jumps


def capture_rules(config: CaptureConfig, *, present: Iterable[str] = ()) -> str:
    """``iptables-restore --noflush`` input for the nat table. Declaring our chains flushes them; the jump
    rules already ``present`` (lines of ``iptables -t nat -S``) are not added again."""
    lines = ["*nat", f":{INBOUND_CHAIN} - [0:0]", f":{OUTBOUND_CHAIN} - [0:0]"]
    for ports in _chunks(config.app_ports):
        lines.append(
            f"-A {INBOUND_CHAIN} -p tcp -m multiport --dports {ports} -j REDIRECT --to-ports {config.ingress_port}"
        )
    lines.append(f"-A {OUTBOUND_CHAIN} -m owner --uid-owner {config.proxy_uid} -j RETURN")
    for cidr in config.ignored_cidrs:
        lines.append(f"-A {OUTBOUND_CHAIN} -d {ipaddress.ip_network(cidr, strict=False)} -j RETURN")
    for ports in _chunks(config.ignored_ports):
        lines.append(f"-A {OUTBOUND_CHAIN} -p tcp -m multiport --dports {ports} -j RETURN")
    lines.append(f"-A {OUTBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {config.egress_port}")
    have = {_normalize(line) for line in present}
    lines.extend(rule for rule in jump_rules(config) if _normalize(rule) not in have)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _normalize(rule: str) -> str:
    return " ".join(rule.split())


def apply_capture(config: CaptureConfig, *, iptables: str = "iptables") -> str:
    """Write the rules in the current network namespace; returns what was restored."""
    binary = shutil.which(iptables)
    restore = shutil.which(f"{iptables}-restore")
    if binary is None or restore is None:
        raise CaptureError(f"{iptables} and {iptables}-restore are needed and not on PATH")
    listed = _run([binary, "-w", "-t", "nat", "-S"], None)
    rules = capture_rules(config, present=listed.splitlines())
    _run([restore, "-w", "--noflush"], rules)
    return rules


def _run(command: list[str], stdin: str | None) -> str:
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"{command[0]}: {exc}") from None
    if done.returncode != 0:
        error = (done.stderr or done.stdout).strip().splitlines()
        raise CaptureError(f"{' '.join(command[:2])} failed: {error[-1] if error else f'exit {done.returncode}'}")
    return done.stdout
