"""The TXT lookup of domain verification against a real DNS server: values found (one split over
several strings joined), a name without TXT, NXDOMAIN and a nameserver that never answers, each
told apart and bounded by the timeout; and DOMAIN_VERIFICATION's settings checked at start."""

from __future__ import annotations

import time

import pytest

from control_plane.domain_dns import ChallengeResolver, challenge_name, fits_in_dns, parse_nameservers
from control_plane.settings import Settings, SettingsError
from tests.dnszone import dns_server, silent_nameserver

SECRET = "k" + "0123456789abcdefghij" * 2


@pytest.fixture(scope="module")
def zone():
    with dns_server() as (zone, address):
        yield zone, ChallengeResolver(parse_nameservers(address), timeout=2.0)


async def test_values_found_and_a_long_value_joined(zone):
    records, resolver = zone
    records.txt[challenge_name("found.example.test")] = ["other", ["a" * 200, "b" * 100]]
    lookup = await resolver.txt("found.example.test")
    assert lookup.outcome == "answer" and sorted(lookup.values) == sorted(["other", "a" * 200 + "b" * 100])


async def test_a_name_without_txt_and_a_missing_name_are_told_apart(zone):
    records, resolver = zone
    records.a_only.add(challenge_name("a-only.example.test"))
    assert (await resolver.txt("a-only.example.test")).outcome == "no_record"
    assert (await resolver.txt("missing.example.test")).outcome == "no_domain"


async def test_a_silent_nameserver_times_out_within_the_bound():
    with silent_nameserver() as address:
        started = time.monotonic()
        lookup = await ChallengeResolver(parse_nameservers(address), timeout=0.5).txt("x.example.test")
    assert lookup.outcome == "timeout" and lookup.values == ()
    assert time.monotonic() - started < 2


def test_nameservers_parse_addresses_and_ports():
    assert parse_nameservers(None) == [] and parse_nameservers(" , ") == []
    assert parse_nameservers("10.0.0.53, 127.0.0.1:5353,[::1]:54,::1") == [
        ("10.0.0.53", 53), ("127.0.0.1", 5353), ("::1", 54), ("::1", 53)]


@pytest.mark.parametrize("text", ["ns.example.com", "10.0.0.1:0", "10.0.0.1:99999", "10.0.0.1:x", "[::1",
                                  "[::1]x", "1.2.3.4:53:53", "10.0.0.1 10.0.0.2"])
def test_bad_nameservers_are_refused_at_start(text):
    with pytest.raises(SettingsError, match="DOMAIN_VERIFICATION_NAMESERVERS"):
        Settings.from_env({"CATALOG_DATABASE_URL": "postgresql://x/y", "SECRET_KEY": SECRET,
                           "DOMAIN_VERIFICATION": "dns", "DOMAIN_VERIFICATION_NAMESERVERS": text})


def test_verification_is_off_unless_asked_and_only_off_or_dns():
    base = {"CATALOG_DATABASE_URL": "postgresql://x/y", "SECRET_KEY": SECRET}
    assert Settings.from_env(base).domain_verification == "off"
    assert Settings.from_env({**base, "DOMAIN_VERIFICATION": "dns"}).domain_verification == "dns"
    for bad in ({"DOMAIN_VERIFICATION": "txt"}, {"DOMAIN_VERIFICATION_TIMEOUT_SECONDS": "0"}):
        with pytest.raises(SettingsError, match="DOMAIN_VERIFICATION"):
            Settings.from_env({**base, **bad})


def test_a_challenge_name_must_fit_in_dns():
    assert fits_in_dns("app.example.com")
    assert not fits_in_dns(".".join(["a" * 60] * 4))  # 243 characters: fine alone, too long with the prefix
