"""Which network targets a patient-supplied webhook or Apprise URL may reach (pure policy)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import yarl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance-metadata services hand out credentials: refused even when an allow-listed
# network contains them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "169.254.0.23",  # Tencent Cloud
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer (a public address)
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)

_CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
# Python 3.11's ipaddress calls these global; each embeds or routes to an IPv4 address (or a
# private IPv6 one) that must be judged instead.
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# Special-purpose ranges (IANA registries) that Python 3.11 does not count as non-global.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in ("192.0.0.0/24", "3fff::/20", "5f00::/16", "2001::/23", "2001:db8::/32")
)
# A host whose last label is a number is a numeric IPv4 form (2130706433, 127.1, 0x7f.1):
# getaddrinfo would turn it into an address, and no top-level domain is numeric.
_NUMERIC_HOST = re.compile(r"(?:.*\.)?(?:0x[0-9a-f]*|[0-9]+)\.?")
_HOST_NAME = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.?)+")


class Refusal(StrEnum):
    """Why a target is refused (for tests and debug logs; never shown to whoever sent it)."""

    NOT_A_URL = "not a URL"
    SCHEME = "scheme not allowed"
    CREDENTIALS = "credentials in the URL"
    NO_HOST = "no host"
    NUMERIC_HOST = "numeric host form"
    NO_ADDRESS = "no address"
    METADATA = "cloud metadata service"
    UNSPECIFIED = "unspecified address"
    LOOPBACK = "loopback address"
    LINK_LOCAL = "link-local address"
    UNIQUE_LOCAL = "unique-local address"
    PRIVATE = "private address"
    MULTICAST = "multicast address"
    BROADCAST = "broadcast address"
    RESERVED = "reserved address"
    CARRIER_GRADE_NAT = "carrier-grade NAT address"
    NAT64_LOCAL = "local-use NAT64 address"
    NOT_GLOBAL = "not a global address"


@dataclass(frozen=True)
class TargetPolicy:
    """Where deliveries may go: global addresses, plus what an operator allow-listed."""

    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_http: bool = False

    @classmethod
    def from_allow_list(
        cls, entries: str | Iterable[str], *, allow_http: bool = False
    ) -> TargetPolicy:
        """A policy from host names and CIDRs (a comma-separated string or a list)."""
        hosts, networks = parse_allow_list(entries)
        return cls(frozenset(hosts), tuple(networks), allow_http)


def parse_allow_list(entries: str | Iterable[str]) -> tuple[list[str], list[IPNetwork]]:
    """Split allow-list entries into host names and networks; ValueError on anything else."""
    if isinstance(entries, str):
        entries = entries.split(",")
    hosts: list[str] = []
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = entry.rstrip(".")
        if not _HOST_NAME.fullmatch(name) or _NUMERIC_HOST.fullmatch(name):
            # The entry itself may be sensitive; the position is enough to find it.
            position = len(hosts) + len(networks) + 1
            raise ValueError(f"allow-list entry {position} is neither a host name nor a CIDR")
        hosts.append(name)
    return hosts, networks


def normal_host(host: str) -> str:
    """A host name as compared with the lists: lower case, without a trailing dot."""
    return host.strip().lower().rstrip(".")


def address_class(address: IPAddress) -> Refusal | None:
    """The reason an address is not a public destination, or None when it is one."""
    if address in METADATA_ADDRESSES:
        return Refusal.METADATA
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            # A zone (fe80::1%eth0) only exists on links of this machine.
            return Refusal.LINK_LOCAL
        if address.is_unspecified:
            return Refusal.UNSPECIFIED
        if address.is_loopback:
            return Refusal.LOOPBACK
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_class(embedded)
        if address in _NAT64_LOCAL:
            return Refusal.NAT64_LOCAL
        if address in _UNIQUE_LOCAL:
            return Refusal.UNIQUE_LOCAL
        if address.is_site_local:
            return Refusal.PRIVATE
    if address.is_unspecified:
        return Refusal.UNSPECIFIED
    if address.is_loopback:
        return Refusal.LOOPBACK
    if address.is_link_local:
        return Refusal.LINK_LOCAL
    if address.is_multicast:
        return Refusal.MULTICAST
    if address == _BROADCAST:
        return Refusal.BROADCAST
    if address in _CARRIER_GRADE_NAT:
        return Refusal.CARRIER_GRADE_NAT
    if address.is_reserved:
        return Refusal.RESERVED
    if address.is_private:
        return Refusal.PRIVATE
    if not address.is_global or any(address in network for network in _NOT_GLOBAL):
        return Refusal.NOT_GLOBAL
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # The IPv4 address an IPv6 one reaches: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
    # NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::).
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_refusal(
    host: str, addresses: Sequence[str | IPAddress], policy: TargetPolicy
) -> Refusal | None:
    """Why `host`, resolved to `addresses`, may not be reached; None when every one may be."""
    name = normal_host(host)
    if name in METADATA_HOSTS:
        return Refusal.METADATA
    if not addresses:
        return Refusal.NO_ADDRESS
    for value in addresses:
        try:
            address = ipaddress.ip_address(value) if isinstance(value, str) else value
        except ValueError:
            return Refusal.NO_ADDRESS
        refusal = address_class(address)
        if refusal is None:
            continue
        allow_listed = name in policy.allowed_hosts or _in_allowed_network(address, policy)
        if refusal is not Refusal.METADATA and allow_listed:
            continue
        return refusal
    return None


def _in_allowed_network(address: IPAddress, policy: TargetPolicy) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
    return any(
        candidate.version == network.version and candidate in network
        for candidate in candidates
        for network in policy.allowed_networks
    )


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names literally (IPv6 without brackets), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def url_refusal(url: str, policy: TargetPolicy) -> Refusal | None:
    """What the URL alone refuses: scheme, credentials, a missing or numeric or metadata host,
    and a literal address outside the policy. A host name's addresses are judged on resolution.
    """
    host = _host_as_aiohttp_sees_it(url)
    if host is None:
        return Refusal.NOT_A_URL
    parsed = yarl.URL(url)
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if parsed.scheme.lower() not in allowed:
        return Refusal.SCHEME
    if parsed.raw_user is not None or parsed.raw_password is not None:
        return Refusal.CREDENTIALS
    if not host:
        return Refusal.NO_HOST
    literal = literal_address(host)
    if literal is not None:
        return address_refusal(host, [literal], policy)
    name = normal_host(host)
    if name in METADATA_HOSTS:
        return Refusal.METADATA
    if _NUMERIC_HOST.fullmatch(name):
        return Refusal.NUMERIC_HOST
    return None


def target_refusal(
    url: str, addresses: Sequence[str | IPAddress], policy: TargetPolicy
) -> Refusal | None:
    """Why a webhook URL whose host resolved to `addresses` is refused; None when allowed."""
    refusal = url_refusal(url, policy)
    if refusal is not None:
        return refusal
    host = _host_as_aiohttp_sees_it(url) or ""
    if literal_address(host) is not None:
        return None
    return address_refusal(host, addresses, policy)


def _host_as_aiohttp_sees_it(url: str) -> str | None:
    # The host after yarl's normalisation (what aiohttp connects to), "" when there is none,
    # None when the URL does not parse. urllib's parser differs: it keeps fullwidth digits
    # ("\uff10.\uff10.\uff10.\uff10") a name, which yarl turns into the literal 0.0.0.0 that
    # aiohttp would connect to without resolving.
    try:
        parsed = yarl.URL(url)
        parsed.port  # noqa: B018 -- raises ValueError on a port that is not a number in range
    except (ValueError, TypeError):
        return None
    return parsed.raw_host or ""
