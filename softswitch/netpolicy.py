"""Where the server may connect when it fetches or posts a URL its users gave it (SSRF).

Callbacks (answer, ring, hangup, fallback, action, status URLs) and ``<Play>`` audio come from
API users: without a policy, a user could make the server post to its own API, or read a cloud
metadata service (``169.254.169.254``). :class:`FetchPolicy` says which addresses are refused:

- every address in ``deny`` (``[http] fetch_deny``; by default link-local, where metadata
  services live, and the unspecified addresses), unless ``allow`` (``[http] fetch_allow``)
  covers it: **allow wins over deny**;
- the server's own HTTP listening address and port (its own API), unless ``allow`` covers the
  address. Loopback otherwise stays allowed: tests and single-host installations run their
  webhook servers there.

The check is made on the address a socket is about to connect to, after DNS resolution, by
the connector's ``socket_factory`` (:meth:`FetchPolicy.connector`): a name that resolves to a
denied address, a redirect to one (each hop opens its own connection) and an IP literal are
all refused before any packet is sent, and there is no window between the check and the
connect (no TOCTOU). A refusal is a :class:`FetchDenied` (an ``OSError``) inside aiohttp's
``ClientConnectorError``; :func:`denied_reason` finds it, and the webhook client records it
as a failure that is never retried.

:meth:`FetchPolicy.url_refusal` checks a URL whose host is an IP literal without connecting:
the HTTP edge refuses such a parameter at request time.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import aiohttp

__all__ = [
    "DEFAULT_DENY",
    "FetchDenied",
    "FetchPolicy",
    "default_policy",
    "denied_reason",
    "fetching",
    "set_default_policy",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Link-local (IPv4 and IPv6), where cloud metadata services answer; the unspecified
#: addresses (which reach the local host); AWS's IPv6 metadata address.
DEFAULT_DENY = ("169.254.0.0/16", "fe80::/10", "0.0.0.0/32", "::/128", "fd00:ec2::254/128")


#: Set while fetching one of the policy's :attr:`FetchPolicy.own_paths` (:func:`fetching`).
_OWN_PATH_OK: ContextVar[bool] = ContextVar("own_path_ok", default=False)


class FetchDenied(OSError):
    """A connection the :class:`FetchPolicy` refuses (raised before the socket exists)."""


def _networks(nets: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in nets)


def _plain(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) as the IPv4 address it is."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class FetchPolicy:
    """The networks the server may not connect to (see the module docstring)."""

    def __init__(self, deny: Iterable[str] = DEFAULT_DENY, allow: Iterable[str] = ()) -> None:
        self.deny = _networks(deny)
        self.allow = _networks(allow)
        #: ``(address, port)`` the server's own HTTP API listens on; an unspecified address
        #: (``0.0.0.0``, ``::``) stands for every address of this host (loopback included).
        self.own: set[tuple[IPAddress, int]] = set()
        #: Paths of the own API the server may fetch from itself (documents and recordings it
        #: serves without credentials: a ``<Play>`` of its own recording); set by the server.
        self.own_paths: tuple[re.Pattern[str], ...] = ()

    def own_path(self, url: str) -> bool:
        """Whether ``url``'s path is one of :attr:`own_paths`."""
        try:
            path = urlsplit(url).path
        except ValueError:
            return False
        return any(p.fullmatch(path) for p in self.own_paths)

    def add_own(self, host: str, port: int) -> None:
        """Refuse ``host:port`` (the server's own listening socket). A host name counts as
        what it resolves to now; an unspecified address as loopback and this host's name."""
        hosts = [host]
        try:
            if ipaddress.ip_address(host).is_unspecified:
                hosts = ["127.0.0.1", "::1", socket.gethostname()]
        except ValueError:
            pass
        for name in hosts:
            try:
                infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
            except OSError:
                continue
            for info in infos:
                self.own.add((_plain(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])), port))

    def refusal(self, address: str, port: int, *, own_ok: bool = False) -> str | None:
        """Why connecting to ``address:port`` is refused, or None when it is allowed."""
        try:
            addr = _plain(ipaddress.ip_address(address.split("%", 1)[0]))
        except ValueError:
            return f"{address} is not an IP address"
        if any(addr in net for net in self.allow if net.version == addr.version):
            return None
        for net in self.deny:
            if net.version == addr.version and addr in net:
                return f"{addr} is in the denied network {net}"
        own = (addr, port) in self.own or (
            addr.is_loopback and port in {p for a, p in self.own if a.is_loopback}
        )
        if own and not (own_ok or _OWN_PATH_OK.get()):
            return f"{addr}:{port} is this server's own HTTP API"
        return None

    def url_refusal(self, url: str) -> str | None:
        """Why ``url`` is refused when its host is an IP literal (None otherwise: names are
        checked when they are resolved, at connect time)."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return None
        if not host:
            return None
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
        if port is None:
            port = 443 if parts.scheme.lower() == "https" else 80
        return self.refusal(host, port, own_ok=self.own_path(url))

    def socket_factory(self, addr_info: Any) -> socket.socket:
        """aiohttp's ``TCPConnector(socket_factory=...)``: called with each resolved address
        just before connecting to it."""
        family, type_, proto, _, sockaddr = addr_info
        why = self.refusal(str(sockaddr[0]), int(sockaddr[1]))
        if why is not None:
            raise FetchDenied(f"refused by the server's network policy: {why}")
        sock = socket.socket(family=family, type=type_, proto=proto)
        sock.setblocking(False)
        return sock

    def connector(self, **kwargs: Any) -> aiohttp.TCPConnector:
        """A connector that checks every address it connects to against this policy."""
        return aiohttp.TCPConnector(socket_factory=self.socket_factory, **kwargs)


@contextlib.contextmanager
def fetching(policy: FetchPolicy | None, url: str) -> Iterator[dict[str, str]]:
    """Around one request to ``url``: when its path is one of ``policy.own_paths`` the
    connection may go to this server's own API; the yielded headers (``Connection: close``)
    must go with the request, so that the connection is not pooled and reused by a request
    to another path of the own API."""
    if policy is None or not policy.own_path(url):
        yield {}
        return
    token = _OWN_PATH_OK.set(True)
    try:
        yield {"Connection": "close"}
    finally:
        _OWN_PATH_OK.reset(token)


def denied_reason(exc: BaseException) -> str | None:
    """The policy's refusal inside an aiohttp connection error, or None for another error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, FetchDenied):
            return str(cur)
        os_error = getattr(cur, "os_error", None)
        if isinstance(os_error, FetchDenied):
            return str(os_error)
        if isinstance(cur, OSError) and "refused by the server's network policy" in str(cur):
            return str(cur)  # happy-eyeballs joins the errors of every address into one
        cur = cur.__cause__ or cur.__context__
    return None


_default = FetchPolicy()


def default_policy() -> FetchPolicy:
    """The process's policy, for fetchers built without one (``<Play>`` downloads)."""
    return _default


def set_default_policy(policy: FetchPolicy) -> None:
    """Make ``policy`` the process's policy (the server does it at start)."""
    global _default
    _default = policy
