"""``HOST[:PORT]`` and ``LOW-HIGH`` as written in flags, the environment and the TOML file."""

from __future__ import annotations

import ipaddress


def parse_hostport(s: str, default_port: int) -> tuple[str, int]:
    """Split ``HOST[:PORT]``; IPv6 literals go in brackets as in RFC 3986 §3.2.2.

    A bare IPv6 address without brackets (``::1``) is accepted as a host without a port, since
    its colons cannot be a port separator.
    """
    text = s.strip()
    if not text:
        raise ValueError("empty host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated '[' in {s!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError as exc:
            raise ValueError(f"not an IPv6 address in brackets: {host!r}") from exc
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {s!r}")
        return host, _parse_port(rest[1:], s)
    if text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError as exc:
            raise ValueError(f"bad host {s!r}: IPv6 addresses need brackets with a port") from exc
        return text, default_port
    host, sep, port = text.partition(":")
    if not host:
        raise ValueError(f"empty host in {s!r}")
    if not sep:
        return host, default_port
    return host, _parse_port(port, s)


def format_hostport(host: str, port: int) -> str:
    """Inverse of :func:`parse_hostport`: brackets around IPv6 literals."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad port {text!r} in {whole!r}")
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    return port


def parse_port_range(s: str) -> tuple[int, int]:
    """Parse ``LOW-HIGH`` (the RTP port range flag)."""
    low, sep, high = s.strip().partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"expected LOW-HIGH, got {s!r}")
    return int(low), int(high)
