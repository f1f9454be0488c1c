"""Where a tenant's webhook may point: public addresses only, checked when the URL is given and again when
it is called (a name may resolve elsewhere by then), and the call goes to the very address that was checked.

Without this, anyone who may add a webhook could make the backend POST to its own database, the cloud's
metadata service or anything in the cluster.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from easysmart.config import ConfigError
from easysmart.errors import EasySmartError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# First match names the reason; the order puts the most specific first.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", "the cloud metadata address"),
    ("fd00:ec2::254/128", "the cloud metadata address"),
    ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
    ("64:ff9b::/96", "a NAT64 address"),
    ("2002::/16", "a 6to4 address"),
    ("127.0.0.0/8", "a loopback address"),
    ("::1/128", "a loopback address"),
    ("0.0.0.0/8", "an unspecified address"),
    ("::/128", "an unspecified address"),
    ("169.254.0.0/16", "a link-local address"),
    ("fe80::/10", "a link-local address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("fc00::/7", "a unique-local address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("ff00::/8", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_REFUSED_NETWORKS = tuple((ipaddress.ip_network(cidr), reason) for cidr, reason in _REFUSED)
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Names only the cluster's resolver answers (Kubernetes Services and Pods).
_CLUSTER_SUFFIXES = (".cluster.local", ".svc", ".internal", ".localhost")
SCHEMES = ("http", "https")


class RefusedDestinationError(EasySmartError):
    """The URL is malformed or points where webhooks may not go."""

    status, code = 422, "refused_destination"


@dataclass(frozen=True)
class Destination:
    """A URL whose host resolved to `address`, which was checked: connect there, name `host` in Host and SNI."""

    scheme: str
    host: str
    port: int
    address: str
    target: str  # path and query

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a webhook may reach: public ones, plus loopback and the given networks when allowed."""

    allow_loopback: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, allow_loopback: bool, allowed_networks: tuple[str, ...]) -> AddressPolicy:
        networks = []
        for text in allowed_networks:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ConfigError(f"NOTIFY_WEBHOOK_ALLOWED_NETWORKS: {text!r} is not a network (CIDR)") from None
        return cls(allow_loopback, tuple(networks))

    def refusal(self, address: IPAddress) -> str | None:
        """Why a webhook may not connect to `address`; None when it may."""
        if any(address in network for network in self.allowed_networks):
            return None
        if self.allow_loopback and any(address in network for network in _LOOPBACK):
            return None
        return classify(address)


def classify(address: IPAddress) -> str | None:
    """The kind of non-public address this is ("a private address", ...); None for a public one."""
    for network, reason in _REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if address.is_private or address.is_reserved or address.is_multicast:
        return "a non-public address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RefusedDestinationError(f"the host {host!r} does not resolve: {error}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(url: str, policy: AddressPolicy, resolver: Resolver = system_resolver) -> Destination:
    """The checked destination of `url`: http(s), no credentials, every address its host resolves to allowed."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedDestinationError(f"not a valid URL: {error}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise RefusedDestinationError("the URL must start with http:// or https://")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise RefusedDestinationError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedDestinationError("the URL must not carry credentials; the signature authenticates the sender")
    scheme = parts.scheme.lower()
    port = port or (443 if scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and (host == "localhost" or host.endswith(_CLUSTER_SUFFIXES)) and not policy.allow_loopback:
        raise RefusedDestinationError(f"the host {host!r} is a local or cluster name")
    addresses = [str(literal)] if literal is not None else resolver(host, port)
    if not addresses:
        raise RefusedDestinationError(f"the host {host!r} does not resolve")
    for text in addresses:
        reason = policy.refusal(ipaddress.ip_address(text.split("%", 1)[0]))
        if reason is not None:
            shown = host if literal is not None else f"{host} ({text})"
            raise RefusedDestinationError(f"the host {shown} is {reason}; webhooks may only call public addresses")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(scheme, host, port, addresses[0], target)
