"""A real DNS server on a free UDP port (dnslib's DNSServer) answering from a dict the test edits:
TXT records by name, and names that exist without a TXT record. Everything else is NXDOMAIN."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):
    def __init__(self) -> None:
        self.txt: dict[str, list[str | list[str]]] = {}  # name -> values (a list: one value in several strings)
        self.a_only: set[str] = set()

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if name in self.txt and request.q.qtype == QTYPE.TXT:
            for value in self.txt[name]:
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(value), ttl=0))
        elif name in self.a_only and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(name, QTYPE.A, rdata=A("192.0.2.1"), ttl=0))
        elif name not in self.txt and name not in self.a_only:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@contextmanager
def dns_server() -> Iterator[tuple[Zone, str]]:
    """The zone and `127.0.0.1:<port>` (DOMAIN_VERIFICATION_NAMESERVERS's form)."""
    zone = Zone()
    server = DNSServer(zone, port=0, address="127.0.0.1", logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
    server.start_thread()
    try:
        yield zone, f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()


@contextmanager
def silent_nameserver() -> Iterator[str]:
    """A UDP port that receives and never answers: a black-holed nameserver."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
