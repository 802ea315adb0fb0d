"""The webhook and Apprise target policy: URL, resolved addresses and allow-list in, verdict out."""

from __future__ import annotations

import ipaddress

import pytest

from streams.notify.targets import (
    Refusal,
    TargetPolicy,
    address_class,
    address_refusal,
    parse_allow_list,
    target_refusal,
    url_refusal,
)

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700:4700::1111"
DEFAULT = TargetPolicy()


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", Refusal.LOOPBACK),
        ("127.8.9.10", Refusal.LOOPBACK),
        ("::1", Refusal.LOOPBACK),
        ("0.0.0.0", Refusal.UNSPECIFIED),
        ("::", Refusal.UNSPECIFIED),
        ("169.254.1.1", Refusal.LINK_LOCAL),
        ("fe80::1", Refusal.LINK_LOCAL),
        ("fe80::1%eth0", Refusal.LINK_LOCAL),
        ("10.1.2.3", Refusal.PRIVATE),
        ("172.16.0.1", Refusal.PRIVATE),
        ("192.168.1.1", Refusal.PRIVATE),
        ("fec0::1", Refusal.PRIVATE),
        ("fc00::1", Refusal.UNIQUE_LOCAL),
        ("fd12:3456::1", Refusal.UNIQUE_LOCAL),
        ("224.0.0.1", Refusal.MULTICAST),
        ("239.255.255.250", Refusal.MULTICAST),
        ("ff02::1", Refusal.MULTICAST),
        ("255.255.255.255", Refusal.BROADCAST),
        ("240.0.0.1", Refusal.RESERVED),
        ("100.64.0.1", Refusal.CARRIER_GRADE_NAT),
        ("100.127.255.254", Refusal.CARRIER_GRADE_NAT),
        ("192.0.2.1", Refusal.PRIVATE),  # documentation
        ("198.18.0.1", Refusal.PRIVATE),  # benchmarking
        ("192.0.0.8", Refusal.NOT_GLOBAL),  # IETF protocol assignments
        ("2001:db8::1", Refusal.PRIVATE),
        ("3fff::1", Refusal.NOT_GLOBAL),
        ("2001::1", Refusal.PRIVATE),  # Teredo
        # IPv6 forms that reach an IPv4 address are judged by that address.
        ("::ffff:127.0.0.1", Refusal.LOOPBACK),
        ("::ffff:10.0.0.1", Refusal.PRIVATE),
        ("::ffff:169.254.169.254", Refusal.METADATA),
        ("::127.0.0.1", Refusal.LOOPBACK),
        ("::10.0.0.1", Refusal.PRIVATE),
        ("64:ff9b::7f00:1", Refusal.LOOPBACK),
        ("64:ff9b::a9fe:a9fe", Refusal.METADATA),
        ("64:ff9b:1::1", Refusal.NAT64_LOCAL),
        ("2002:7f00:1::1", Refusal.LOOPBACK),
        ("2002:c0a8:101::1", Refusal.PRIVATE),
        # Cloud metadata services.
        ("169.254.169.254", Refusal.METADATA),
        ("169.254.170.2", Refusal.METADATA),
        ("100.100.100.200", Refusal.METADATA),
        ("168.63.129.16", Refusal.METADATA),
        ("fd00:ec2::254", Refusal.METADATA),
    ],
)
def test_address_classes_inside_the_network_are_refused(address: str, refusal: Refusal) -> None:
    assert address_class(ipaddress.ip_address(address)) is refusal
    assert address_refusal("hooks.example.org", [address], DEFAULT) is refusal


@pytest.mark.parametrize(
    "address", [PUBLIC_V4, "8.8.8.8", PUBLIC_V6, "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None
    assert target_refusal("https://hooks.example.org/in", [address], DEFAULT) is None


def test_every_resolved_address_must_be_allowed() -> None:
    url = "https://hooks.example.org/in"
    assert target_refusal(url, [PUBLIC_V4, PUBLIC_V6], DEFAULT) is None
    assert target_refusal(url, [PUBLIC_V4, "10.0.0.7"], DEFAULT) is Refusal.PRIVATE
    assert target_refusal(url, ["::1", PUBLIC_V4], DEFAULT) is Refusal.LOOPBACK
    assert target_refusal(url, [], DEFAULT) is Refusal.NO_ADDRESS


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://127.0.0.1/hook", Refusal.LOOPBACK),
        ("https://[::1]:8443/hook", Refusal.LOOPBACK),
        ("https://[::ffff:7f00:1]/hook", Refusal.LOOPBACK),
        ("https://169.254.169.254/latest/meta-data/", Refusal.METADATA),
        ("https://[fd00:ec2::254]/", Refusal.METADATA),
        ("https://metadata.google.internal/computeMetadata/v1/", Refusal.METADATA),
        ("https://METADATA.google.internal./", Refusal.METADATA),
        ("https://2130706433/", Refusal.NUMERIC_HOST),
        ("https://127.1/", Refusal.NUMERIC_HOST),
        ("https://0x7f.0.0.1/", Refusal.NUMERIC_HOST),
        ("https://user:pass@hooks.example.org/", Refusal.CREDENTIALS),
        ("https://token@hooks.example.org/", Refusal.CREDENTIALS),
        ("http://hooks.example.org/", Refusal.SCHEME),
        ("ftp://hooks.example.org/", Refusal.SCHEME),
        ("json://hooks.example.org/", Refusal.SCHEME),
        ("not a url", Refusal.SCHEME),
        ("https:///path-only", Refusal.NO_HOST),
        ("https://hooks.example.org:99999/", Refusal.NOT_A_URL),
        ("https://[::1/", Refusal.NOT_A_URL),
    ],
)
def test_what_the_url_alone_refuses(url: str, refusal: Refusal) -> None:
    assert url_refusal(url, DEFAULT) is refusal
    # Addresses that resolution might give do not change a refusal of the URL itself.
    assert target_refusal(url, [PUBLIC_V4], DEFAULT) is refusal


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        # Fullwidth digits and ideographic full stops: yarl (hence aiohttp) normalises them
        # into a literal address, which aiohttp connects to without asking the resolver.
        ("https://\uff10.\uff10.\uff10.\uff10/", Refusal.UNSPECIFIED),
        ("https://127\u30020\u30020\u30021/", Refusal.LOOPBACK),
        ("https://[::ffff:127.0.0.1]/", Refusal.LOOPBACK),
    ],
)
def test_the_host_is_judged_as_the_http_client_parses_it(url: str, refusal: Refusal) -> None:
    assert url_refusal(url, DEFAULT) is refusal


def test_a_host_name_waits_for_its_addresses() -> None:
    assert url_refusal("https://hooks.example.org/in", DEFAULT) is None
    assert url_refusal("https://localhost/in", DEFAULT) is None
    assert target_refusal("https://localhost/in", ["127.0.0.1", "::1"], DEFAULT) is (
        Refusal.LOOPBACK
    )


def test_http_only_when_the_policy_allows_it() -> None:
    policy = TargetPolicy(allow_http=True)
    assert target_refusal("http://hooks.example.org/", [PUBLIC_V4], policy) is None
    assert target_refusal("HTTPS://hooks.example.org/", [PUBLIC_V4], DEFAULT) is None
    # Allowing http does not allow credentials or inner addresses.
    assert url_refusal("http://a:b@hooks.example.org/", policy) is Refusal.CREDENTIALS
    assert url_refusal("http://127.0.0.1/", policy) is Refusal.LOOPBACK


def test_allow_list_by_cidr() -> None:
    policy = TargetPolicy.from_allow_list("10.20.0.0/16, 127.0.0.1, fd00:abcd::/32")
    url = "https://receiver.hospital.internal/in"
    assert target_refusal(url, ["10.20.3.4"], policy) is None
    assert target_refusal(url, ["10.21.3.4"], policy) is Refusal.PRIVATE
    assert target_refusal(url, ["10.20.3.4", "192.168.0.1"], policy) is Refusal.PRIVATE
    assert target_refusal("https://127.0.0.1:8443/", [], policy) is None
    assert target_refusal("https://127.0.0.2:8443/", [], policy) is Refusal.LOOPBACK
    # The mapped form of an allow-listed IPv4 address is that address.
    assert target_refusal("https://[::ffff:10.20.0.1]/", [], policy) is None
    assert target_refusal(url, ["fd00:abcd::5"], policy) is None
    assert target_refusal(url, ["fd00:abce::5"], policy) is Refusal.UNIQUE_LOCAL


def test_allow_list_by_host_name() -> None:
    policy = TargetPolicy.from_allow_list(["Receiver.Hospital.Internal."])
    assert policy.allowed_hosts == frozenset({"receiver.hospital.internal"})
    allowed = "https://receiver.hospital.internal/in"
    assert target_refusal(allowed, ["10.1.1.1", "fd00::1"], policy) is None
    assert target_refusal("https://other.hospital.internal/", ["10.1.1.1"], policy) is (
        Refusal.PRIVATE
    )
    # Credentials and the scheme are checked even for an allow-listed host.
    assert url_refusal("http://receiver.hospital.internal/", policy) is Refusal.SCHEME


def test_metadata_is_refused_even_when_allow_listed() -> None:
    policy = TargetPolicy.from_allow_list("169.254.0.0/16, fd00:ec2::/32, metadata.google.internal")
    assert target_refusal("https://169.254.169.254/", [], policy) is Refusal.METADATA
    assert target_refusal("https://169.254.1.1/", [], policy) is None
    assert target_refusal("https://[fd00:ec2::254]/", [], policy) is Refusal.METADATA
    url = "https://metadata.google.internal/"
    assert target_refusal(url, ["169.254.169.254"], policy) is Refusal.METADATA
    named = TargetPolicy.from_allow_list("hooks.hospital.internal")
    # A name that resolves to a metadata address is refused whatever the allow-list says.
    assert target_refusal("https://hooks.hospital.internal/", ["169.254.169.254"], named) is (
        Refusal.METADATA
    )


def test_parse_allow_list() -> None:
    hosts, networks = parse_allow_list(" a.example , ,10.0.0.0/8,[::1],192.168.1.7/24")
    assert hosts == ["a.example"]
    assert networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.0/24"),
    ]
    assert parse_allow_list("") == ([], [])
    for bad in ("not a host", "https://a.example", "10.0.0.0/33", "127.1"):
        with pytest.raises(ValueError, match="entry 1 ") as caught:
            parse_allow_list(bad)
        assert bad not in str(caught.value)
