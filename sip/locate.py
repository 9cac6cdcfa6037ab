"""Locating SIP servers (RFC 3263 §4): which transport, address and port to send a request to.

Sans-I/O: :class:`Locator` is a planner. It never touches the network; it says which DNS
queries it needs, is fed the answers as plain records, and produces the ordered list of
:class:`Target` to try (the caller fails over down the list on 503 or a transport timeout,
RFC 3263 §4.3). :func:`sip.aio.resolver.resolve` drives it with ``dns.asyncresolver``.

Typical use::

    plan = Locator("example.com", port=None, transport=None, secure=False)
    while (query := plan.next_query()) is not None:
        plan.feed(query.name, query.rdtype, answers_for(query))   # [] for NXDOMAIN/NoAnswer
    targets = plan.targets()

:meth:`Locator.next_queries` returns every query that can be asked now (they do not depend on
each other), so a driver may run them concurrently. Records that arrive unasked (the additional
section of an SRV answer) may be fed at any time: a query already answered is never asked.

Record shapes: ``NAPTR`` → :class:`Naptr`, ``SRV`` → :class:`Srv`, ``A``/``AAAA`` → address
strings.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "DEFAULT_PORTS",
    "LocateError",
    "Locator",
    "Naptr",
    "Query",
    "Srv",
    "Target",
    "order_srv",
]

#: RFC 3261 §19.1.2: 5060 for sip over UDP/TCP, 5061 for TLS.
DEFAULT_PORTS: dict[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}

# RFC 3263 §4.1 NAPTR services and the transport each selects (SCTP and WebSocket not supported).
_NAPTR_SERVICES: dict[str, str] = {"sip+d2u": "udp", "sip+d2t": "tcp", "sips+d2t": "tls"}
# RFC 3263 §4.1 SRV prefixes per transport.
_SRV_PREFIX: dict[str, str] = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

# Bounds on what one answer may make us do (a hostile or broken zone must not fan out).
MAX_NAPTR = 8
MAX_SRV = 16


class LocateError(ValueError):
    """The URI cannot be located with the transports we support (e.g. ``sips:`` with
    ``transport=udp``), or :meth:`Locator.targets` was asked before the plan finished."""


@dataclass(frozen=True)
class Target:
    """One place to send a request: ``host`` is an IP literal (no brackets), ``transport`` one of
    ``udp``, ``tcp``, ``tls``."""

    host: str
    port: int
    transport: str


class Query(NamedTuple):
    """A DNS question the plan needs answered: ``name`` without trailing dot, ``rdtype`` one of
    ``NAPTR``, ``SRV``, ``A``, ``AAAA``."""

    name: str
    rdtype: str


@dataclass(frozen=True)
class Naptr:
    """A NAPTR record (RFC 3403 §4.1)."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@dataclass(frozen=True)
class Srv:
    """An SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _ip_literal(host: str) -> str | None:
    """The IP address in ``host`` (``[::1]`` accepted), or ``None`` if it is a name."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        return None


def order_srv(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """Order SRV records for use (RFC 2782, "Usage rules"): ascending priority; within one
    priority, repeated weighted random selection, zero-weight records placed first so they get a
    small chance of being picked. A single record with target ``.`` means the service is
    decidedly not available: the result is empty."""
    recs = [r for r in records if _norm(r.target) != ""]
    by_priority: dict[int, list[Srv]] = {}
    for r in recs:
        by_priority.setdefault(r.priority, []).append(r)
    out: list[Srv] = []
    for priority in sorted(by_priority):
        pending = sorted(by_priority[priority], key=lambda r: r.weight != 0)  # zeros first
        while pending:
            total = sum(r.weight for r in pending)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(pending):
                running += r.weight
                if running >= pick:
                    out.append(pending.pop(i))
                    break
    return out


class Locator:
    """RFC 3263 §4 target selection for one URI, as a planner fed with DNS answers.

    ``host``/``port``/``transport`` come from the URI (``maddr`` already applied by the caller,
    ``transport`` the URI parameter, lower-case or not); ``secure`` is true for ``sips:`` URIs.
    ``supported`` lists our transports in order of preference; ``address_types`` the address
    records to ask for, in the order their results are tried; ``rng`` drives the RFC 2782
    weighted choice (inject a seeded one in tests).

    The steps (RFC 3263 §4.1, §4.2):

    1. IP literal: that address, port from the URI or the transport's default; transport from
       the parameter, else UDP (TLS for sips).
    2. Explicit port: A/AAAA of the host with that port; transport as in 1.
    3. Explicit transport, no port: SRV ``_sip._udp``/``_sip._tcp``/``_sips._tcp`` then A/AAAA of
       the targets; no SRV: A/AAAA of the host, default port.
    4. Neither: NAPTR, keeping ``s``-flag records whose service we support (only ``SIPS+D2T``
       for sips), ordered by order then preference, then SRV of their replacements. No usable
       NAPTR: SRV for each supported transport, in our order of preference. No SRV at all:
       A/AAAA of the host with UDP 5060 (TLS 5061 for sips).
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        secure: bool = False,
        *,
        supported: Sequence[str] = ("udp", "tcp"),
        address_types: Sequence[str] = ("A", "AAAA"),
        rng: random.Random | None = None,
    ) -> None:
        self.host = _norm(host) if _ip_literal(host) is None else host
        self.port = port
        self.secure = secure
        self.supported = tuple(t.lower() for t in supported)
        self.address_types = tuple(address_types)
        self._rng = rng or random.Random()
        self._answers: dict[Query, list[object]] = {}
        self._asked: set[Query] = set()
        self._srv_order: dict[str, list[Srv]] = {}

        self.transport: str | None = None
        if transport is not None:
            t = transport.lower()
            if secure and t == "udp":
                # RFC 3261 §26.2.2: sips requires TLS over a reliable transport.
                raise LocateError("sips: URI with transport=udp")
            if secure and t == "tcp":
                t = "tls"
            if t not in self.supported:
                raise LocateError(f"transport {transport!r} not supported")
            self.transport = t
        elif secure and "tls" not in self.supported:
            raise LocateError("sips: URI but TLS not supported")

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, name: str, rdtype: str, records: Iterable[object]) -> None:
        """Give the answer to a query (asked or not). An empty answer stands for NXDOMAIN,
        NoAnswer or a timeout alike: RFC 3263 falls back the same way for each. Feeding a query
        twice keeps the first answer (the SRV order is drawn once)."""
        q = Query(_norm(name), rdtype.upper())
        if q in self._answers:
            return
        recs = list(records)
        self._answers[q] = recs
        if q.rdtype == "SRV":
            srv = [r for r in recs if isinstance(r, Srv)][:MAX_SRV]
            self._srv_order[q.name] = order_srv(srv, self._rng)

    # -- asking ----------------------------------------------------------------------------

    def next_queries(self) -> list[Query]:
        """Every query needed now that was not handed out yet; empty when nothing more can be
        asked (then either :attr:`done`, or answers to handed-out queries are awaited)."""
        _, missing = self._walk()
        fresh = [q for q in dict.fromkeys(missing) if q not in self._asked]
        self._asked.update(fresh)
        return fresh

    def next_query(self) -> Query | None:
        """One query to ask (a serial driver feeds its answer before asking again), or ``None``
        when :attr:`done`."""
        _, missing = self._walk()
        for q in missing:
            if q not in self._answers:
                self._asked.add(q)
                return q
        return None

    @property
    def done(self) -> bool:
        """Whether every answer the plan needs is in."""
        return not self._walk()[1]

    def targets(self) -> list[Target]:
        """The ordered, de-duplicated targets. Raises :class:`LocateError` if answers are
        still missing."""
        found, missing = self._walk()
        if missing:
            raise LocateError(f"answers still needed: {missing}")
        return list(dict.fromkeys(found))

    # -- the RFC 3263 walk -----------------------------------------------------------------
    # _walk() re-runs the whole procedure against the answers so far; it stops at the first step
    # whose answers are missing and reports all the queries of that step (they can run in
    # parallel). Re-running is cheap (a handful of records) and keeps one straight-line copy of
    # the RFC's procedure instead of a state table spread over callbacks.

    def _lookup(self, name: str, rdtype: str, missing: list[Query]) -> list[object] | None:
        q = Query(_norm(name), rdtype)
        if q in self._answers:
            return self._answers[q]
        missing.append(q)
        return None

    def _default_transport(self) -> str:
        if self.secure:
            return "tls"
        # RFC 3263 §4.1: UDP when nothing else says otherwise, if we support it.
        return "udp" if "udp" in self.supported else self.supported[0]

    def _addresses(
        self, name: str, port: int, transport: str, missing: list[Query]
    ) -> list[Target]:
        literal = _ip_literal(name)
        if literal is not None:
            return [Target(literal, port, transport)]
        out: list[Target] = []
        for rdtype in self.address_types:
            recs = self._lookup(name, rdtype, missing)
            for r in recs or ():
                ip = _ip_literal(str(r))
                if ip is not None:
                    out.append(Target(ip, port, transport))
        return out

    def _srv_targets(
        self, names: Sequence[tuple[str, str]], missing: list[Query]
    ) -> list[Target] | None:
        """SRV step for ``(srv name, transport)`` pairs, then A/AAAA of their targets. ``None``
        while answers are missing; an empty list if no SRV record exists."""
        for srv_name, _ in names:
            self._lookup(srv_name, "SRV", missing)
        if missing:
            return None
        out: list[Target] = []
        for srv_name, transport in names:
            for rec in self._srv_order.get(_norm(srv_name), []):
                out.extend(self._addresses(rec.target, rec.port, transport, missing))
        return None if missing else out

    def _walk(self) -> tuple[list[Target], list[Query]]:
        missing: list[Query] = []
        literal = _ip_literal(self.host)

        # Steps 1 and 2: numeric host or explicit port, no SRV/NAPTR (RFC 3263 §4.1, §4.2).
        if literal is not None or self.port is not None:
            transport = self.transport or self._default_transport()
            port = self.port if self.port is not None else DEFAULT_PORTS[transport]
            found = self._addresses(self.host, port, transport, missing)
            return found, missing

        # Step 3: explicit transport, no port: SRV for it, else A/AAAA.
        if self.transport is not None:
            names = [(_SRV_PREFIX[self.transport] + self.host, self.transport)]
            via_srv = self._srv_targets(names, missing)
            if via_srv is None:
                return [], missing
            if via_srv or self._srv_exists(names):
                return via_srv, missing
            port = DEFAULT_PORTS[self.transport]
            return self._addresses(self.host, port, self.transport, missing), missing

        # Step 4: NAPTR.
        naptr = self._lookup(self.host, "NAPTR", missing)
        if naptr is None:
            return [], missing
        names = self._usable_naptr(naptr)
        if not names:
            # RFC 3263 §4.1: no (usable) NAPTR: SRV for each transport we support.
            prefixes = ["tls"] if self.secure else list(self.supported)
            names = [(_SRV_PREFIX[t] + self.host, t) for t in prefixes if t in _SRV_PREFIX]
        via_srv = self._srv_targets(names, missing)
        if via_srv is None:
            return [], missing
        if via_srv or self._srv_exists(names):
            return via_srv, missing
        # RFC 3263 §4.2: no SRV records: A/AAAA, default transport and port.
        transport = self._default_transport()
        return self._addresses(self.host, DEFAULT_PORTS[transport], transport, missing), missing

    def _srv_exists(self, names: Sequence[tuple[str, str]]) -> bool:
        """Whether some SRV answer had records, even if they led nowhere (target ``.`` or no
        addresses): then the domain published SRV and A/AAAA fallback does not apply."""
        return any(self._answers.get(Query(_norm(n), "SRV")) for n, _ in names)

    def _usable_naptr(self, records: Sequence[object]) -> list[tuple[str, str]]:
        """NAPTR records we can follow, as ``(SRV name, transport)`` in order/preference order
        (RFC 3263 §4.1: only the ``s`` flag; sips URIs only ``SIPS+D2T``)."""
        usable: list[tuple[int, int, str, str]] = []
        for r in records:
            if not isinstance(r, Naptr) or r.flags.lower() != "s":
                continue
            transport = _NAPTR_SERVICES.get(r.service.lower())
            if transport is None or transport not in self.supported:
                continue
            if self.secure and transport != "tls":
                continue
            replacement = _norm(r.replacement)
            if not replacement:
                continue
            usable.append((r.order, r.preference, replacement, transport))
        usable.sort(key=lambda u: (u[0], u[1]))
        return list(dict.fromkeys((name, t) for _, _, name, t in usable[:MAX_NAPTR]))
