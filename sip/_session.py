"""What both INVITE sessions (:mod:`sip.invite`, UAC; :mod:`sip.invite_server`, UAS) share:
the settings, the actions a session asks its endpoint to carry out, and the header helpers
(SDP bodies, RFC 3326 Reason, RFC 4028 Session-Expires)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sip import causes
from sip.events import CallEvent
from sip.message import SipRequest, SipResponse

_Q850_NAMES = {code: name for name, code in causes.Q850_CODES.items() if code < 200}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    contact: str  # our Contact header value, e.g. "<sip:softswitch@127.0.0.1:5060>"
    user_agent: str = "softswitch/0.1"
    allow: str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, NOTIFY"
    supported: str = "100rel, timer"
    session_expires: int = 1800  # RFC 4028; 0 = do not ask for session timers
    min_se: int = 90
    max_redirects: int = 3
    t1: float = 0.5
    t2: float = 4.0


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Start a client transaction for ``request`` towards ``next_hop`` (a URI to resolve)."""

    request: SipRequest
    next_hop: str


@dataclass(frozen=True, slots=True)
class SendAck:
    """Send this ACK for a 2xx directly (it is not part of any transaction, §13.2.2.4)."""

    request: SipRequest
    next_hop: str


@dataclass(frozen=True, slots=True)
class RemoteSdp:
    """The callee's session description (answer from 18x/2xx); apply it to the media."""

    sdp: str
    early: bool


@dataclass(frozen=True, slots=True)
class Emit:
    event: CallEvent


Action = SendRequest | SendAck | RemoteSdp | Emit


def body_sdp(message: SipRequest | SipResponse) -> str | None:
    ctype = (message.get("Content-Type") or "").split(";")[0].strip().lower()
    if message.body and ctype in ("application/sdp", ""):
        return message.body.decode("utf-8", "replace")
    return None


def reason_cause(message: SipRequest) -> str | None:
    """A Q.850 cause carried in a Reason header (RFC 3326), if any."""
    for value in message.get_all("Reason"):
        proto, _, rest = value.partition(";")
        if proto.strip().upper() != "Q.850":
            continue
        for param in rest.split(";"):
            name, _, val = param.strip().partition("=")
            if name.lower() == "cause":
                with contextlib.suppress(ValueError):
                    return _Q850_NAMES.get(int(val.strip('"')))
    return None


def session_expires(message: SipResponse | SipRequest) -> tuple[int, str | None] | None:
    value = message.get("Session-Expires")
    if not value:
        return None
    head, *params = value.split(";")
    try:
        interval = int(head.strip())
    except ValueError:
        return None
    refresher = None
    for p in params:
        name, _, val = p.strip().partition("=")
        if name.lower() == "refresher":
            refresher = val.strip().lower()
    return interval, refresher


def allows(message: SipRequest | SipResponse, method: str) -> bool:
    """Does the message's Allow (§20.5, comma lists in any number of headers) list ``method``?"""
    return any(
        m.strip().upper() == method for value in message.get_all("Allow") for m in value.split(",")
    )


def header_int(message: SipRequest | SipResponse, name: str) -> int | None:
    """The leading integer of a header such as Min-SE (``90;param``), or None."""
    value = message.get(name)
    if not value:
        return None
    try:
        return int(value.split(";", 1)[0].strip())
    except ValueError:
        return None


def has_option(message: SipRequest | SipResponse, header: str, option: str) -> bool:
    return any(v.strip().lower() == option for v in message.get_all(header))


def safe_tag(message: SipRequest | SipResponse, which: str) -> str | None:
    """The From/To tag from the message's cached parsed view (parsed once per message)."""
    try:
        return message.to_tag if which == "to" else message.from_tag
    except ValueError:
        return None


def reason_header(cause: str) -> str:
    code = causes.Q850_CODES.get(cause, 16)
    if code > 127:  # our own names (ORIGINATOR_CANCEL, ALLOTTED_TIMEOUT...) are not Q.850 codes
        code = 16
    return f'Q.850;cause={code};text="{cause}"'


def copy_request(request: SipRequest, *, drop: tuple[str, ...] = ()) -> SipRequest:
    copy = SipRequest(request.method, request.uri)
    lowered = {d.lower() for d in drop}
    for name, value in request.headers:
        if name.lower() not in lowered:
            copy.add(name, value)
    copy.body = request.body
    return copy
