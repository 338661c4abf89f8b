"""The TXT lookup behind custom domain verification (DOMAIN_VERIFICATION=dns); the only module
that imports dnspython.

Why a resolver of our own rather than the process's: the nameservers are configurable
(DOMAIN_VERIFICATION_NAMESERVERS) for split-horizon setups and for tests, the whole lookup is
bounded by one timeout (an API request waits for it), and nothing is cached, so a record created a
moment ago is seen by the next check instead of a cached NXDOMAIN."""

from __future__ import annotations

import ipaddress

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import msgspec

CHALLENGE_LABEL = "_tenantplane-challenge"
MAX_VALUES = 10  # TXT values reported back in a failed check (a record set can be large)
MAX_VALUE_CHARS = 255


def challenge_name(domain: str) -> str:
    """Where the tenant publishes its token: `_tenantplane-challenge.<domain>`."""
    return f"{CHALLENGE_LABEL}.{domain}"


def fits_in_dns(domain: str) -> bool:
    """The challenge name is a legal DNS name (at most 253 characters with the prefix)."""
    try:
        dns.name.from_text(challenge_name(domain))
    except dns.exception.DNSException:
        return False
    return len(challenge_name(domain)) <= 253


def parse_nameservers(text: str | None) -> list[tuple[str, int]]:
    """`10.0.0.53, 127.0.0.1:5353, [::1]:53, ::1` -> (address, port) pairs; [] for unset (the
    system's resolv.conf). Only IP addresses: a name would need a resolver to find the resolver."""
    found: list[tuple[str, int]] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, sep, rest = item[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"{item!r} is not [address]:port")
            port = _port(item, rest[1:]) if rest else 53
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = _port(item, port_text)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{item!r}: expected an IP address, optionally with :port") from None
        found.append((host, port))
    return found


def _port(item: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{item!r}: the port must be 1-65535")
    return int(text)


class TxtLookup(msgspec.Struct, frozen=True, kw_only=True):
    """What the challenge name holds. `outcome`: `answer` (values found), `no_record` (the name
    exists, no TXT), `no_domain` (NXDOMAIN), `timeout`, `failed` (SERVFAIL, refused, ...)."""

    outcome: str
    values: tuple[str, ...] = ()


class ChallengeResolver:
    def __init__(self, nameservers: list[tuple[str, int]], timeout: float) -> None:
        self.nameservers = nameservers
        self.timeout = timeout

    def _resolver(self) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=not self.nameservers)
        if self.nameservers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in self.nameservers]
        resolver.lifetime = self.timeout
        resolver.timeout = min(self.timeout, 2.0)  # per server try; lifetime bounds the whole lookup
        resolver.cache = None
        return resolver

    async def txt(self, domain: str) -> TxtLookup:
        try:
            answer = await self._resolver().resolve(challenge_name(domain), "TXT", search=False)
        except dns.resolver.NXDOMAIN:
            return TxtLookup(outcome="no_domain")
        except dns.resolver.NoAnswer:
            return TxtLookup(outcome="no_record")
        except dns.exception.Timeout:
            return TxtLookup(outcome="timeout")
        except dns.exception.DNSException:
            return TxtLookup(outcome="failed")
        # a TXT record is one or more strings of up to 255 bytes; long values are split, so join them
        values = [b"".join(rdata.strings).decode("ascii", "replace") for rdata in answer]
        return TxtLookup(outcome="answer", values=tuple(values))


def challenge_resolver(mode: str, nameservers: str | None, timeout: float) -> ChallengeResolver | None:
    """DOMAIN_VERIFICATION's resolver: None for `off` (domains route when added)."""
    return ChallengeResolver(parse_nameservers(nameservers), timeout) if mode == "dns" else None
