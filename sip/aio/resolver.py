"""RFC 3263 server location over asyncio: drives the sans-I/O :class:`sip.locate.Locator` with
``dns.asyncresolver`` (NAPTR → SRV → A/AAAA).

Answers are best effort, as RFC 3263 §4 expects: NXDOMAIN, NoAnswer, SERVFAIL and timeouts all
count as "no records", so the plan falls back (NAPTR → SRV → A/AAAA → default port). The whole
resolution is bounded by ``timeout`` seconds. Names the system knows without DNS work offline:
``localhost`` (RFC 6761 §6.3) and names in the hosts file are answered from there without
asking DNS for NAPTR/SRV; other A/AAAA lookups that DNS cannot answer fall back to
``loop.getaddrinfo`` (nsswitch, mDNS…).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from sip.locate import Locator, Naptr, Query, Srv, Target

__all__ = ["resolve", "read_hosts"]

# Each round answers one step of RFC 3263 (NAPTR, SRV, A/AAAA); a handful is plenty.
_MAX_ROUNDS = 8

_hosts_cache: dict[str, tuple[float, dict[str, list[str]]]] = {}


def read_hosts(path: str = "/etc/hosts") -> dict[str, list[str]]:
    """Name (lower-case) → addresses from a hosts file, cached until the file changes.
    A missing or unreadable file is an empty mapping."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return {}
    cached = _hosts_cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    table: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2:
                    continue
                addr = fields[0].split("%", 1)[0]  # drop an IPv6 zone
                for name in fields[1:]:
                    addrs = table.setdefault(name.rstrip(".").lower(), [])
                    if addr not in addrs:
                        addrs.append(addr)
    except OSError:
        return {}
    _hosts_cache[path] = (mtime, table)
    return table


def _family_of(rdtype: str) -> int:
    return socket.AF_INET6 if rdtype == "AAAA" else socket.AF_INET


def _matches_family(addr: str, rdtype: str) -> bool:
    return (":" in addr) == (rdtype == "AAAA")


def _local_answer(q: Query, hosts: dict[str, list[str]]) -> list[object] | None:
    """Answer from the hosts file or RFC 6761 ``localhost``; ``None`` if DNS must be asked."""
    name = q.name
    if q.rdtype == "SRV":
        # _sip._udp.<host>: local when <host> is.
        labels = name.split(".")
        while labels and labels[0].startswith("_"):
            labels.pop(0)
        name = ".".join(labels)
    is_localhost = name == "localhost" or name.endswith(".localhost")
    if name not in hosts and not is_localhost:
        return None
    if q.rdtype not in ("A", "AAAA"):
        return []  # a local name has no NAPTR/SRV; do not leak it to DNS
    addrs = [a for a in hosts.get(q.name, []) if _matches_family(a, q.rdtype)]
    if not addrs and is_localhost and q.name not in hosts:
        addrs = ["::1"] if q.rdtype == "AAAA" else ["127.0.0.1"]
    return list(addrs)


def _convert(rdtype: str, rdata: object) -> object | None:
    if rdtype == "NAPTR":
        return Naptr(
            order=rdata.order,  # type: ignore[attr-defined]
            preference=rdata.preference,  # type: ignore[attr-defined]
            flags=rdata.flags.decode("ascii", "replace"),  # type: ignore[attr-defined]
            service=rdata.service.decode("ascii", "replace"),  # type: ignore[attr-defined]
            regexp=rdata.regexp.decode("ascii", "replace"),  # type: ignore[attr-defined]
            replacement=rdata.replacement.to_text(omit_final_dot=True),  # type: ignore[attr-defined]
        )
    if rdtype == "SRV":
        return Srv(
            priority=rdata.priority,  # type: ignore[attr-defined]
            weight=rdata.weight,  # type: ignore[attr-defined]
            port=rdata.port,  # type: ignore[attr-defined]
            target=rdata.target.to_text(omit_final_dot=True),  # type: ignore[attr-defined]
        )
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)  # type: ignore[attr-defined]
    return None


def _additional(
    response: dns.message.Message | None, wanted: set[str]
) -> list[tuple[Query, list[object]]]:
    """A/AAAA records from the additional section of an SRV answer, for the SRV targets only
    (RFC 2782: "the additional data section ... may be used"); anything else is ignored."""
    out: list[tuple[Query, list[object]]] = []
    if response is None:
        return out
    for rrset in response.additional:
        name = rrset.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(rrset.rdtype)
        if name in wanted and rdtype in ("A", "AAAA"):
            out.append((Query(name, rdtype), [str(r.address) for r in rrset]))
    return out


async def resolve(
    host: str,
    port: int | None,
    transport: str | None,
    secure: bool,
    *,
    supported: Sequence[str] = ("udp", "tcp"),
    resolver: dns.asyncresolver.Resolver | None = None,
    timeout: float = 8.0,
    rng: random.Random | None = None,
    hosts_path: str = "/etc/hosts",
    system_fallback: bool = True,
) -> list[Target]:
    """Ordered targets for a SIP URI's host/port/transport parameter/sips flag (RFC 3263 §4).

    ``resolver`` defaults to one configured from the system (``/etc/resolv.conf``); if the
    system has no DNS configuration, only the hosts file and ``getaddrinfo`` are used. The
    queries of one step run concurrently; the whole call takes at most about ``timeout`` seconds.
    When DNS fails for an A/AAAA query (no configuration, NXDOMAIN, SERVFAIL, timeout) and
    ``system_fallback`` is true, ``loop.getaddrinfo`` is asked instead; a name DNS knows without
    that record type (NoAnswer) is not.
    Raises :class:`sip.locate.LocateError` for URIs we cannot serve (e.g. sips with
    transport=udp); returns an empty list when the name does not resolve.
    """
    plan = Locator(host, port, transport, secure, supported=supported, rng=rng)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    hosts = read_hosts(hosts_path)
    if resolver is None:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            resolver = None

    async def getaddrinfo(q: Query) -> list[object]:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return []
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(q.name, None, family=_family_of(q.rdtype), type=socket.SOCK_DGRAM),
                remaining,
            )
        except (OSError, TimeoutError, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))

    async def answer(q: Query) -> tuple[list[object], list[tuple[Query, list[object]]]]:
        local = _local_answer(q, hosts)
        if local is not None:
            return local, []
        records: list[object] = []
        extra: list[tuple[Query, list[object]]] = []
        dns_failed = True  # no resolver, NXDOMAIN, SERVFAIL, timeout…
        remaining = deadline - loop.time()
        if resolver is not None and remaining > 0:
            try:
                ans = await resolver.resolve(
                    dns.name.from_text(q.name),
                    q.rdtype,
                    raise_on_no_answer=False,
                    lifetime=remaining,
                    search=False,
                )
                dns_failed = False  # the name exists; maybe not with this type (NoAnswer)
                for rdata in ans.rrset or ():
                    converted = _convert(q.rdtype, rdata)
                    if converted is not None:
                        records.append(converted)
                if q.rdtype == "SRV":
                    wanted = {r.target.lower() for r in records if isinstance(r, Srv)}
                    extra = _additional(ans.response, wanted)
            except (dns.exception.DNSException, OSError, ValueError):
                records = []  # counts as "no records" (RFC 3263 §4)
        if dns_failed and system_fallback and q.rdtype in ("A", "AAAA"):
            # Names DNS does not know may still resolve through the system (nsswitch, mDNS).
            records = await getaddrinfo(q)
        return records, extra

    for _ in range(_MAX_ROUNDS):
        queries = plan.next_queries()
        if not queries:
            break
        results = await asyncio.gather(*(answer(q) for q in queries))
        for q, (records, extra) in zip(queries, results, strict=True):
            plan.feed(q.name, q.rdtype, records)
            for hint, hint_records in extra:
                plan.feed(hint.name, hint.rdtype, hint_records)

    # Out of rounds (should not happen): whatever is still missing counts as unanswered.
    for _ in range(_MAX_ROUNDS):
        if plan.done:
            break
        for q in plan.next_queries():
            plan.feed(q.name, q.rdtype, [])
    return plan.targets()
