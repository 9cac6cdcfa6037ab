"""The endpoint's inputs and outputs: where a message came from, what to send, the events
it reports and the records of the calls it holds (see :mod:`sip.endpoint`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sip.events import CallEvent
from sip.invite import ClientInviteSession
from sip.invite_server import ServerInviteSession
from sip.keepalive import GatewayHealthChanged
from sip.message import SipRequest
from sip.policy import PolicyConfig
from sip.register import RegistrationChanged
from sip.registrar import BindingsChanged, RegistrarConfig

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from: the transport name, the source address, and an opaque
    handle of the connection it came on (stream transports; answers go back on it)."""

    transport: str
    address: Address
    connection: object | None = None


@dataclass(frozen=True, slots=True)
class Datagram:
    """Bytes to send: over ``transport`` to ``address``, on ``connection`` if given.
    ``server_name``: for TLS, the host name of the URI the address was resolved from (the
    certificate must match it and it goes in SNI, RFC 5922 §4; None: the address itself)."""

    data: bytes
    transport: str
    address: Address
    connection: object | None = None
    server_name: str | None = None


@dataclass
class EndpointConfig:
    """What the endpoint needs to know of its user agent; the adapter fills in the ports
    once its sockets are bound."""

    local_host: str = "127.0.0.1"  #: address put in Via/Contact
    #: Per transport (``"udp"``, ``"tcp"``), the address put in Via/Contact instead of
    #: ``local_host``: behind a NAT that maps each transport to its own public address.
    advertised_hosts: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=lambda: {"udp": 5060})  #: transport -> port
    user_agent: str = "softswitch/0.1"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    session_expires: int = 1800
    max_redirects: int = 3
    linger: float = 32.0  #: how long an ended session's state absorbs retransmissions
    #: CSeq numbers a watched dialog may use before its stored state is renewed
    #: (:meth:`sip.endpoint.Endpoint.dialog_state`)
    dialog_seq_lease: int = 64
    #: Take out-of-dialog INVITEs as :class:`IncomingCall`; False answers them 603.
    accept_inbound: bool = False
    #: Who may make us answer: the peer allow-list and the out-of-dialog answer rate.
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    #: Serve REGISTERs of these users (:mod:`sip.registrar`); None: REGISTER gets 405.
    registrar: RegistrarConfig | None = None


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """Resolve ``host`` (RFC 3263) and call :meth:`Endpoint.resolved` with ``token``."""

    token: int
    host: str
    port: int | None
    transport: str | None
    secure: bool
    supported: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallProgress:
    """An event of the call with this Call-ID (either side)."""

    call_id: str
    event: CallEvent


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """An out-of-dialog INVITE (only with ``accept_inbound``): answer it through
    :meth:`Endpoint.ring`, :meth:`Endpoint.answer` or :meth:`Endpoint.reject`."""

    call_id: str
    request: SipRequest
    offer: str | None


@dataclass(frozen=True, slots=True)
class CallReleased:
    """The ended call's lingering state is gone; nothing more will come for it."""

    call_id: str


@dataclass(frozen=True, slots=True)
class DialogChanged:
    """A watched dialog (see :meth:`sip.endpoint.Endpoint.dialog_state`) changed its remote
    target or route set, or used up its lease of CSeq numbers: ``state`` is the new
    :meth:`~sip.endpoint.Endpoint.dialog_state` to keep in place of the old one."""

    call_id: str
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    """A request sent outside any call (:meth:`sip.endpoint.Endpoint.send_bye`) is over:
    ``status`` is its final response, 408 when it timed out (Timer F), 503 when it could not
    be sent (unresolvable or unusable next hop, transport error)."""

    call_id: str
    method: str
    status: int


EndpointEvent = (
    ResolveRequest
    | CallProgress
    | IncomingCall
    | CallReleased
    | RegistrationChanged
    | GatewayHealthChanged
    | DialogChanged
    | RequestCompleted
    | BindingsChanged
)

#: ``on_remote_sdp(sdp, early)``: the peer's SDP, an answer (early: from a 18x) or the one an
#: ACK carries. Raise ``ValueError`` when it is unusable: a final answer then ends the call
#: with BYE and INCOMPATIBLE_DESTINATION (see :meth:`sip.endpoint.Endpoint.invite`).
AnswerHandler = Callable[[str, bool], None]


@dataclass(eq=False)
class ClientCall:
    """An outbound call as the endpoint keeps it."""

    session: ClientInviteSession
    on_remote_sdp: AnswerHandler | None = None
    transport: str = "udp"  #: the transport the live INVITE went out on
    #: (transport, address) every request of the call goes to, whatever its URI says: a
    #: registered phone's flow (:class:`sip.registrar.Binding`), the address its REGISTER
    #: came from (RFC 3581), which a phone behind a NAT is reached at.
    flow: tuple[str, Address] | None = None
    ring_deadline: float | None = None
    release_at: float | None = None
    ended: bool = False
    #: (remote target, route set, CSeq lease) of the last dialog state handed out
    dialog_watch: tuple[str, tuple[str, ...], int] | None = None


@dataclass(eq=False)
class ServerCall:
    """An inbound call as the endpoint keeps it."""

    session: ServerInviteSession
    source: Source
    address: Address
    on_remote_sdp: AnswerHandler | None = None
    release_at: float | None = None
    ended: bool = False
    #: (remote target, route set, CSeq lease) of the last dialog state handed out
    dialog_watch: tuple[str, tuple[str, ...], int] | None = None

    @property
    def transport(self) -> str:
        return self.source.transport


Call = ClientCall | ServerCall
