"""An in-memory loop transport for tests: endpoints wired together with a fake clock.

No sockets and no sleeps, the aioquic way: datagrams an endpoint wants to send are handed
to the endpoint bound at their destination address, DNS questions are answered from a
table, and time only moves when the test says so (:meth:`LoopNetwork.advance` runs every
timer that falls due on the way, in order).

    net, client, server = client_and_server()
    call = client.invite(make_client_session(client, "sip:bob@10.0.0.2"), net.now)
    net.roundtrip()
    incoming = net.take(server, IncomingCall)[0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sip.endpoint import (
    Address,
    Datagram,
    Endpoint,
    EndpointConfig,
    EndpointEvent,
    ResolveRequest,
    Source,
)
from sip.invite import ClientInviteSession
from sip.locate import Target
from sip.message import new_call_id

__all__ = ["CLIENT", "SERVER", "LoopNetwork", "client_and_server", "make_client_session"]

CLIENT: Address = ("10.0.0.1", 5060)
SERVER: Address = ("10.0.0.2", 5060)


@dataclass
class Delivery:
    """One datagram on the wire, for assertions: who sent it where, and its first line."""

    source: Address
    destination: Address
    data: bytes
    dropped: bool = False

    @property
    def first_line(self) -> str:
        return self.data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


@dataclass
class LoopNetwork:
    """Endpoints by address, a fake clock, and a record of every datagram."""

    now: float = 0.0
    endpoints: dict[Address, Endpoint] = field(default_factory=dict)
    #: name -> targets, answering each :class:`ResolveRequest` (unknown names: no targets)
    hosts: dict[str, list[Target]] = field(default_factory=dict)
    #: ``drop(delivery)`` true loses that datagram (a lossy network)
    drop: Callable[[Delivery], bool] | None = None
    #: True: a datagram to an address nobody is bound at draws an ICMP port unreachable
    #: (the sender's :meth:`Endpoint.transport_error`), as on a host with the port closed
    icmp_unreachable: bool = False
    wire: list[Delivery] = field(default_factory=list)
    events: dict[int, list[EndpointEvent]] = field(default_factory=dict)

    def add(self, address: Address, config: EndpointConfig | None = None) -> Endpoint:
        config = config or EndpointConfig()
        config.local_host = address[0]
        config.ports = {"udp": address[1]}
        endpoint = Endpoint(config)
        self.endpoints[address] = endpoint
        self.events[id(endpoint)] = []
        return endpoint

    def address_of(self, endpoint: Endpoint) -> Address:
        return next(a for a, e in self.endpoints.items() if e is endpoint)

    # -- moving datagrams

    def step(self) -> int:
        """Deliver what every endpoint has queued once; answer DNS questions; keep the
        other events. Returns how many datagrams moved (delivered or dropped)."""
        moved = 0
        for address, endpoint in list(self.endpoints.items()):
            self._collect(endpoint)
            for datagram in endpoint.datagrams_to_send():
                moved += 1
                self._deliver(address, datagram)
            self._collect(endpoint)
        return moved

    def roundtrip(self) -> int:
        """Deliver until nothing more is in flight; the number of datagrams moved."""
        total = 0
        while (moved := self.step()) > 0:
            total += moved
        return total

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every timer that falls due on the way (in order)
        and delivering what they send."""
        until = self.now + seconds
        self.roundtrip()
        while True:
            due = [(t, e) for e in self.endpoints.values() if (t := e.get_timer()) is not None and t <= until]
            if not due:
                break
            deadline = min(t for t, _ in due)
            self.now = max(self.now, deadline)
            for t, endpoint in due:
                if t <= self.now:
                    endpoint.handle_timer(self.now)
            self.roundtrip()
        self.now = until

    def take(self, endpoint: Endpoint, kind: type | tuple[type, ...] | None = None) -> list[EndpointEvent]:
        """The events ``endpoint`` produced (of ``kind``), removed from the record."""
        self._collect(endpoint)
        events = self.events[id(endpoint)]
        taken = [e for e in events if kind is None or isinstance(e, kind)]
        self.events[id(endpoint)] = [e for e in events if not (kind is None or isinstance(e, kind))]
        return taken

    def sent(self, source: Address | None = None, starts: str = "") -> list[Delivery]:
        """Datagrams on the wire, from ``source``, whose first line starts with ``starts``."""
        return [d for d in self.wire if (source is None or d.source == source) and d.first_line.startswith(starts)]

    # -- internals

    def _deliver(self, source: Address, datagram: Datagram) -> None:
        delivery = Delivery(source, datagram.address, datagram.data)
        self.wire.append(delivery)
        if self.drop is not None and self.drop(delivery):
            delivery.dropped = True
            return
        target = self.endpoints.get(datagram.address)
        if target is None:
            delivery.dropped = True  # nobody there: lost like a datagram to a dead host
            sender = self.endpoints.get(source)
            if self.icmp_unreachable and sender is not None:
                sender.transport_error(datagram.transport, datagram.address, self.now)
            return
        target.receive(datagram.data, Source(datagram.transport, source), self.now)

    def _collect(self, endpoint: Endpoint) -> None:
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, ResolveRequest):
                endpoint.resolved(event.token, list(self.hosts.get(event.host, [])), self.now)
            else:
                self.events[id(endpoint)].append(event)


def client_and_server(
    *, client_config: EndpointConfig | None = None, server_config: EndpointConfig | None = None
) -> tuple[LoopNetwork, Endpoint, Endpoint]:
    """A network with a client endpoint at :data:`CLIENT` and a server endpoint (taking
    inbound calls) at :data:`SERVER`."""
    net = LoopNetwork()
    client = net.add(CLIENT, client_config)
    server_config = server_config or EndpointConfig(accept_inbound=True)
    server = net.add(SERVER, server_config)
    return net, client, server


def make_client_session(
    endpoint: Endpoint, target: str, *, sdp: str | None = None, from_user: str = "alice"
) -> ClientInviteSession:
    """An INVITE session from ``endpoint`` to ``target`` (a SIP URI)."""
    host = endpoint.config.local_host
    return ClientInviteSession.create(
        request_uri=target,
        from_uri=f"sip:{from_user}@{host}",
        to_uri=target,
        call_id=new_call_id(host),
        config=endpoint.session_config("udp"),
        sdp=sdp,
    )
