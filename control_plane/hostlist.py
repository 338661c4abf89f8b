"""Which database hosts the admin API may register (`SERVER_ALLOWED_HOSTS`): host names, IP
addresses and CIDR ranges, comma-separated. Unset means any host.

A name matches only itself (case-insensitively) and an address only the ranges that hold it:
names are never resolved here, since the answer could change between this check and the connection
(DNS rebinding); list the names you register by, or register by address."""

from __future__ import annotations

import ipaddress
import re

# letters, digits, '-', '_' (container service names) and dots; no '/', '%' or ',' (socket paths,
# percent-encoded paths and libpq's multi-host lists)
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_tcp_host(host: str) -> bool:
    """An IP address or a host name; never a unix-socket path or a list of hosts."""
    return ip_address(host) is not None or bool(_HOST_NAME.fullmatch(host.lower()))


class HostAllowlist:
    def __init__(self, names: frozenset[str], networks: tuple[Network, ...]) -> None:
        self.names, self.networks = names, networks

    @classmethod
    def parse(cls, value: str | None) -> HostAllowlist | None:
        """None for unset or blank (any host); ValueError naming the entry that is neither a host
        name, an address nor a CIDR range."""
        entries = [e.strip().lower() for e in (value or "").split(",") if e.strip()]
        if not entries:
            return None
        names: set[str] = set()
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if not _HOST_NAME.fullmatch(entry) or entry.replace(".", "").isdigit():
                raise ValueError(f"{entry[:100]!r} is neither a host name, an IP address nor a CIDR range")
            names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def permits(self, host: str) -> bool:
        address = ip_address(host)
        if address is None:
            return host.lower().rstrip(".") in self.names
        return any(address in network for network in self.networks)
