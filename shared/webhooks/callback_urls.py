"""Callback URLs a caller may register, and only those: the server-side request forgery guard.

A callback makes this app send a POST wherever a caller says, from inside the partner's network
boundary, so by default:

- The URL must be plain: `https`, an ASCII host name of letters, digits, hyphens and dots (or an
  IP literal), an optional port 1-65535, and nothing that two URL parsers could read differently:
  no user info (not even an empty `@`), no backslash, no percent-encoding or whitespace in the
  authority, no control characters, no fragment.
- Its host must resolve only to public addresses: never private (10/8, 172.16/12, 192.168/16,
  fc00::/7), loopback, link-local (169.254/16 incl. the cloud metadata endpoint), multicast,
  reserved or unspecified, and never an IPv6 form that carries such an IPv4 address inside it:
  IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64 (64:ff9b::/96; the local-use
  64:ff9b:1::/48 is refused outright), 6to4 (2002::/16) or Teredo (2001::/32).
- The delivery connects to the very address that was checked (`CallbackTarget`), never resolving
  the name a second time: a DNS answer with TTL 0 that turns private after the check (DNS
  rebinding) is never reached. TLS still verifies the certificate for the host name (SNI too).

The check is made when the URL is registered and again right before each delivery (DNS can
change), and redirects are never followed. `CALLBACK_ALLOW_PRIVATE_NETWORKS=true` lifts the
address rules and allows `http`, for local development only.

The lookup waits no longer than the answer's deadline allows (`DeadlineExceeded`, 503 at
registration) and at most `DNS_SECONDS`. A host that does not resolve *now* (or not within
`DNS_SECONDS`) is `CallbackHostUnresolved`: refused at registration (400), but retried like any
other failure at delivery time (a temporary DNS failure is not final).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.deadlines import getaddrinfo
from shared.errors import InvalidRequest

MAX_URL_LENGTH = 2048

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_DOTTED_QUAD = re.compile(r"^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_LOOKS_NUMERIC = re.compile(r"^[0-9.]+$|^0x", re.IGNORECASE)
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class CallbackUrlRefused(InvalidRequest):
    slug = "callback-url-refused"
    title = "The callback URL is not allowed"


class CallbackHostUnresolved(CallbackUrlRefused):
    """The host did not resolve now: refused at registration, retried at delivery."""

    slug = "callback-host-unresolved"
    title = "The callback URL's host did not resolve"


@dataclass(frozen=True)
class CallbackTarget:
    """A checked callback URL and the one address to connect to."""

    url: str
    scheme: str
    host: str  # the name, for Host, SNI and the certificate check
    port: int
    address: str  # the checked IP the connection goes to

    @property
    def pinned_url(self) -> str:
        """The URL with the host replaced by the checked address (Host and SNI keep the name)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if ":" in self.address else self.address
        path = parts.path or "/"
        return f"{self.scheme}://{literal}:{self.port}{path}" + (f"?{parts.query}" if parts.query else "")

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def check_callback_url(url: object, *, allow_private_networks: bool) -> str:
    """The URL if it may receive callbacks; else `CallbackUrlRefused` saying why."""
    return callback_target(url, allow_private_networks=allow_private_networks).url


def callback_target(url: object, *, allow_private_networks: bool) -> CallbackTarget:
    """Check the URL and resolve its host once: where to connect, or `CallbackUrlRefused`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or not url.isascii():
        raise CallbackUrlRefused(f"The callback URL must be an ASCII URL of at most {MAX_URL_LENGTH} characters")
    if _UNSAFE_CHARACTERS.search(url):
        raise CallbackUrlRefused("The callback URL must not contain whitespace, control characters or backslashes")
    parts = urlsplit(url)
    allowed_schemes = ("https", "http") if allow_private_networks else ("https",)
    if parts.scheme not in allowed_schemes:
        raise CallbackUrlRefused("The callback URL must use https")
    if "@" in parts.netloc or "%" in parts.netloc or parts.fragment or "#" in url:
        raise CallbackUrlRefused("The callback URL needs a plain host: no user info, percent-encoding or fragment")
    host = _host(parts.hostname)
    try:
        explicit_port = parts.port
    except ValueError:
        raise CallbackUrlRefused("The callback URL has an invalid port") from None
    port = (443 if parts.scheme == "https" else 80) if explicit_port is None else explicit_port
    if not 1 <= port <= 65535:
        raise CallbackUrlRefused("The callback URL has an invalid port")
    addresses = resolve(host, port)
    if not allow_private_networks:
        for address in addresses:
            if not is_public(address):
                raise CallbackUrlRefused(
                    f"The callback host resolves to a non-public address ({address}); only public hosts are allowed"
                )
    return CallbackTarget(url, parts.scheme, host, port, addresses[0])


def _host(hostname: str | None) -> str:
    """A host name in its one canonical form, or an IP literal; anything else is refused."""
    if not hostname:
        raise CallbackUrlRefused("The callback URL needs a host")
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    if _LOOKS_NUMERIC.match(hostname) and not _DOTTED_QUAD.match(hostname):
        # 0x7f.1, 2130706433, 017700000001, 127.1: inet_aton reads them as IPv4, others do not.
        raise CallbackUrlRefused("The callback host must be a name or a dotted-quad IPv4 address")
    if not _HOST_NAME.match(hostname):
        raise CallbackUrlRefused("The callback host must be letters, digits, hyphens and dots")
    return hostname


def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to, in the resolver's order, once; the lookup is held to
    the deadline (`shared.deadlines.getaddrinfo`: a resolver that hangs does not hold the answer)."""
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise CallbackHostUnresolved(f"The callback host {host!r} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise CallbackHostUnresolved(f"The callback host {host!r} does not resolve")
    return addresses


def is_public(address: str) -> bool:
    """A globally routable unicast address, and no IPv6 wrapper around one that is not."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if "%" in address:  # a zone index only exists on link-local scopes
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:  # local-use NAT64: never a public destination
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _public(embedded)
    return _public(ip)


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:  # fec0::/10: private in practice
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_private or ip.is_unspecified)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, compatible, NAT64, 6to4, Teredo client)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None
