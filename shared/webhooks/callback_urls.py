"""Callback URLs a caller may register, and only those: the server-side request forgery guard.

A callback makes this app send a POST wherever a caller says, from inside the partner's network
boundary, so by default the URL must be `https` and its host must resolve only to public
addresses: never private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local
(169.254/16 incl. the cloud metadata endpoint), multicast, reserved or unspecified. The check is
made when the URL is registered and again right before each delivery (DNS can change), and
redirects are never followed. `CALLBACK_ALLOW_PRIVATE_NETWORKS=true` lifts it, for local
development only.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from shared.errors import InvalidRequest

MAX_URL_LENGTH = 2048


class CallbackUrlRefused(InvalidRequest):
    slug = "callback-url-refused"
    title = "The callback URL is not allowed"


def check_callback_url(url: object, *, allow_private_networks: bool) -> str:
    """The URL if it may receive callbacks; else `CallbackUrlRefused` saying why."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or not url.isascii():
        raise CallbackUrlRefused(f"The callback URL must be an ASCII URL of at most {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    allowed_schemes = ("https", "http") if allow_private_networks else ("https",)
    if parts.scheme not in allowed_schemes:
        raise CallbackUrlRefused("The callback URL must use https")
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise CallbackUrlRefused("The callback URL needs a host, and no user info or fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackUrlRefused("The callback URL has an invalid port") from None
    if not allow_private_networks:
        for address in resolve(parts.hostname, port):
            if not is_public(address):
                raise CallbackUrlRefused(
                    f"The callback host resolves to a non-public address ({address}); only public hosts are allowed"
                )
    return url


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise CallbackUrlRefused(f"The callback host {host!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
