"""A DNS server on loopback for DNS discovery tests (dnslib, UDP and TCP on 127.0.0.1 at a free port).

Answers A queries from ``records`` (name -> addresses, changeable while it runs), an empty NOERROR answer to other
types for a known name (no IPv6 here), and NXDOMAIN for names it does not know. Counts the queries per name, so a
test can wait for Envoy to have asked again instead of sleeping."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

from meshctl.devtools.envoy_process import free_port


class LoopbackDns(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: dict[str, list[str]], ttl: int = 1) -> None:
        self.records = records
        self.ttl = ttl
        self.queries: Counter[str] = Counter()
        self.port = free_port()
        self._lock = threading.Lock()
        self._servers = [
            DNSServer(self, port=self.port, address="127.0.0.1", tcp=tcp, logger=_Quiet()) for tcp in (False, True)
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        with self._lock:
            self.queries[name] += 1
            addresses = self.records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=self.ttl))
        return reply

    def start(self) -> None:
        for server in self._servers:
            server.start_thread()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


class _Quiet:
    """dnslib's logger interface, saying nothing (it prints every request by default)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
