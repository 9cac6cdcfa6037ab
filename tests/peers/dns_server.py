"""A tiny authoritative DNS server over UDP on 127.0.0.1 (dnspython's message API): the real
peer for resolver tests, so no test ever queries a DNS server off this machine."""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset


class LoopbackDns(asyncio.DatagramProtocol):
    """A tiny authoritative DNS server over UDP on 127.0.0.1, built with dnspython's message
    API. ``zone`` maps (name, rdtype) to rdata texts; unknown names get NXDOMAIN."""

    def __init__(self, zone: dict[tuple[str, str], list[str]], additional: bool = False) -> None:
        self.zone = zone
        self.additional = additional
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _rrset(self, name: str, rdtype: str) -> dns.rrset.RRset | None:
        texts = self.zone.get((name, rdtype))
        if not texts:
            return None
        return dns.rrset.from_text_list(dns.name.from_text(name), 60, "IN", rdtype, texts)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        rrset = self._rrset(name, rdtype)
        if rrset is not None:
            response.answer.append(rrset)
            if self.additional and rdtype == "SRV":
                for rdata in rrset:
                    target = rdata.target.to_text(omit_final_dot=True)
                    extra = self._rrset(target, "A")
                    if extra is not None:
                        response.additional.append(extra)
        elif not any(n == name for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def start_dns(
    zone: dict[tuple[str, str], list[str]], additional: bool = False
) -> tuple[LoopbackDns, asyncio.DatagramTransport, dns.asyncresolver.Resolver]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: LoopbackDns(zone, additional), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.timeout = 1.0
    resolver.lifetime = 2.0
    return protocol, transport, resolver
