"""Who may make the endpoint answer: the SIP peer allow-list and the per-source rate limit
of out-of-dialog answers, sans-I/O (time comes in as ``now``).

An outbound-only user agent has few reasons to answer strangers. Each request from an
unknown source that no call of ours holds (an OPTIONS probe, a spoofed INVITE, garbage that
earns a 400) costs a response, and a small spoofed datagram would otherwise buy a larger
answer sent to its victim. So:

- with an allow-list (networks), requests from elsewhere are dropped without an answer;
  responses to our own transactions and requests inside our dialogs are never checked here
  (they are matched to what we sent);
- out-of-dialog answers are rate-limited per source address by a token bucket (``rate`` per
  second, ``burst`` at once); a request over the limit is dropped without an answer. The
  table of sources is bounded (least recently seen forgotten first).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["PeerPolicy", "PolicyConfig", "parse_networks"]


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]`` as networks (a bare address is a
    /32 or /128). Raises ``ValueError`` naming the bad entry."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or 192.0.2.7)"
            ) from None
    return tuple(networks)


@dataclass(frozen=True)
class PolicyConfig:
    allowed_peers: tuple[str, ...] = ()
    """Networks whose requests are served; empty: any source (only the rate limit applies)."""
    rate: float = 5.0
    """Out-of-dialog answers per second per source address; 0 = no limit."""
    burst: float = 10.0
    """Answers a source may draw at once before ``rate`` applies."""
    max_sources: int = 4096
    """Most source addresses the rate limiter remembers."""


class PeerPolicy:
    """The allow-list and the per-source token buckets; counts what it refused."""

    def __init__(self, config: PolicyConfig | None = None):
        self.config = config or PolicyConfig()
        self._networks: list[Network] = list(parse_networks(self.config.allowed_peers))
        self._hosts: set[str] = set()  # single addresses always allowed (the trunks)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # host -> (tokens, at)
        self.not_allowed = 0  #: requests dropped: source outside the allow-list
        self.rate_limited = 0  #: requests dropped: over the source's out-of-dialog rate

    @property
    def restricted(self) -> bool:
        """Is an allow-list in force?"""
        return bool(self._networks)

    def allow_host(self, host: str) -> None:
        """Always serve this address (a configured trunk), whatever the allow-list says."""
        try:
            self._hosts.add(str(_ip(host)))
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None

    def admits(self, host: str) -> bool:
        """May a request from ``host`` be served at all? Counts a refusal."""
        if not self._networks:
            return True
        try:
            ip = _ip(host)
        except ValueError:
            self.not_allowed += 1
            return False
        if str(ip) in self._hosts or any(
            ip in net for net in self._networks if net.version == ip.version
        ):
            return True
        self.not_allowed += 1
        return False

    def may_answer(self, host: str, now: float) -> bool:
        """Take a token from ``host``'s bucket for one out-of-dialog answer; False (and
        counted) when the bucket is empty."""
        rate, burst = self.config.rate, max(1.0, self.config.burst)
        if rate <= 0:
            return True
        tokens, at = self._buckets.pop(host, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - at) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.rate_limited += 1
        self._buckets[host] = (tokens, now)  # most recently seen last
        while len(self._buckets) > self.config.max_sources:
            self._buckets.popitem(last=False)
        return allowed


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
