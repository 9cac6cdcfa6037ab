"""Dialogs (RFC 3261 §12), both sides: early and confirmed, route sets, CSeq, target refresh.

A dialog is identified by Call-ID, local tag and remote tag. An INVITE may create several
early dialogs (forking: one per To tag in the 1xx responses); the first 2xx confirms one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sip._message import check_values
from sip.headers import NameAddr
from sip.message import SipRequest, SipResponse


class DialogError(Exception):
    """An in-dialog request that the dialog refuses; ``status`` is what to answer."""

    def __init__(self, reason: str, status: int = 500):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _contact_uri(message: SipRequest | SipResponse) -> str | None:
    try:
        contacts = message.contacts  # parsed once per message and cached
    except ValueError:
        return None
    return str(contacts[0].uri) if contacts else None


def _message_tag(message: SipRequest | SipResponse, *, to: bool) -> str | None:
    """The tag of the message's To (or From), from its cached view (parsed once per
    message): None when the header is missing, malformed or has no tag."""
    try:
        return message.to_tag if to else message.from_tag
    except ValueError:
        return None


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_header: str  # our From header value as sent (with our tag)
    remote_header: str  # the To header value the peer answered with (with its tag)
    local_seq: int
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    remote_seq: int | None = None
    secure: bool = False
    state: str = "early"  # early | confirmed | terminated

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def to_state(self) -> dict[str, Any]:
        """The dialog as a plain dict (JSON-safe): what a later process needs to send a
        request in it (:meth:`from_state`), e.g. the BYE of a call a crash left up."""
        return {
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_header": self.local_header,
            "remote_header": self.remote_header,
            "local_seq": self.local_seq,
            "remote_target": self.remote_target,
            "route_set": list(self.route_set),
            "remote_seq": self.remote_seq,
            "secure": self.secure,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Dialog:
        """A confirmed dialog from :meth:`to_state`'s dict; ``ValueError`` names the first
        field missing or of the wrong type (the dict comes from storage, so it is checked)."""
        texts = ("call_id", "local_tag", "remote_tag", "local_header", "remote_header", "remote_target")
        for name in texts:
            if not isinstance(state.get(name), str) or not state[name]:
                raise ValueError(f"dialog state: {name} must be a non-empty string")
        seq = state.get("local_seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**31:
            raise ValueError("dialog state: local_seq must be an integer in [0, 2**31)")
        routes = state.get("route_set", [])
        if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
            raise ValueError("dialog state: route_set must be a list of strings")
        remote_seq = state.get("remote_seq")
        return cls(
            call_id=state["call_id"],
            local_tag=state["local_tag"],
            remote_tag=state["remote_tag"],
            local_header=state["local_header"],
            remote_header=state["remote_header"],
            local_seq=seq,
            remote_target=state["remote_target"],
            route_set=list(routes),
            remote_seq=remote_seq if isinstance(remote_seq, int) else None,
            secure=bool(state.get("secure", False)),
            state="confirmed",
        )

    @classmethod
    def from_uac_response(cls, request: SipRequest, response: SipResponse) -> Dialog:
        """RFC 3261 §12.1.2: the UAC's dialog state from a 1xx (early) or 2xx (confirmed)
        response that carries a To tag. The route set is the Record-Route list reversed."""
        remote_tag = _message_tag(response, to=True)
        local_tag = _message_tag(request, to=False)
        if not remote_tag or not local_tag:
            raise DialogError("response without a To tag cannot create a dialog")
        target = _contact_uri(response) or request.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_header=request.get("From") or "",
            remote_header=response.get("To") or "",
            local_seq=request.cseq[0],
            remote_target=target,
            route_set=list(reversed(response.get_all("Record-Route"))),
            secure=request.uri.lower().startswith("sips:"),
            state="confirmed" if 200 <= response.status < 300 else "early",
        )

    @classmethod
    def from_uas(
        cls, request: SipRequest, local_tag: str, *, confirmed: bool = False
    ) -> Dialog:
        """RFC 3261 §12.1.1: the UAS's dialog state from the dialog-creating request it
        answers with a To tag. The route set is the Record-Route list in order, the remote
        target the request's Contact, the remote sequence number its CSeq; our own CSeq space
        starts empty (§12.1.1: the local sequence number is empty, our first request picks it)."""
        remote_tag = _message_tag(request, to=False)
        if not remote_tag:
            raise DialogError("request without a From tag cannot create a dialog", 400)
        to_value = request.get("To") or ""
        if _message_tag(request, to=True) is None:
            to_value = f"{to_value};tag={local_tag}"
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_header=to_value,
            remote_header=request.get("From") or "",
            local_seq=0,
            remote_target=_contact_uri(request) or request.uri,
            route_set=list(request.get_all("Record-Route")),
            remote_seq=request.cseq[0],
            secure=request.uri.lower().startswith("sips:"),
            state="confirmed" if confirmed else "early",
        )

    def update_from_response(self, response: SipResponse, *, method: str = "INVITE") -> None:
        """Apply a later response of the same dialog.

        §12.1.2 / §13.2.2.4: a 2xx to the INVITE confirms the dialog, and the route set is
        recomputed from it (it may differ from the 1xx). §12.2.1.2: a 2xx to a target-refresh
        request (re-INVITE, UPDATE) replaces the remote target with its Contact.
        """
        contact = _contact_uri(response)
        if 200 <= response.status < 300:
            if self.state == "early" and method == "INVITE":
                self.route_set = list(reversed(response.get_all("Record-Route")))
                self.state = "confirmed"
                self.remote_header = response.get("To") or self.remote_header
            if contact and method in ("INVITE", "UPDATE"):
                self.remote_target = contact
        elif self.state == "early" and response.status < 200 and contact:
            self.remote_target = contact

    def create_request(
        self, method: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> SipRequest:
        """RFC 3261 §12.2.1.1: a request within the dialog.

        CSeq increments by one except for ACK and CANCEL, which reuse the INVITE's number
        (the caller passes those through :meth:`create_ack`). Loose routing when the first
        route has ``lr``; strict routing (the RFC 2543 way) otherwise.
        """
        if method not in ("ACK", "CANCEL"):
            self.local_seq += 1
        return self._request(method, self.local_seq, headers, body)

    def create_ack(
        self, invite_cseq: int, *, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> SipRequest:
        """RFC 3261 §13.2.2.4: the ACK for a 2xx is an in-dialog request with the INVITE's
        CSeq number, a new branch, and the dialog's route set."""
        return self._request("ACK", invite_cseq, headers, body)

    def _request(
        self, method: str, seq: int, headers: list[tuple[str, str]] | None, body: bytes
    ) -> SipRequest:
        uri, routes = self.request_uri_and_routes()
        req = SipRequest(method, uri)
        # The template of every in-dialog request: the same lines ``add`` would append one
        # by one (canonical names, values checked at once; a test compares the two).
        lines = [("Route", route) for route in routes] if routes else []
        lines += (
            ("Max-Forwards", "70"),
            ("From", self.local_header),
            ("To", self.remote_header),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        )
        check_values(lines)
        req.headers = lines
        for name, value in headers or ():
            req.add(name, value)
        req.body = body
        return req

    def request_uri_and_routes(self) -> tuple[str, list[str]]:
        """§12.2.1.1: loose routing keeps the remote target as Request-URI; strict routing
        moves the first route into the Request-URI and appends the remote target."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0])
        params = getattr(first.uri, "params", {}) or {}
        if "lr" in params:
            return self.remote_target, list(self.route_set)
        strict_uri = str(first.uri)
        return strict_uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    def next_hop(self) -> str:
        """The URI the request is physically sent to (§8.1.2): the first Route, else the
        Request-URI."""
        uri, routes = self.request_uri_and_routes()
        if routes:
            return str(NameAddr.parse(routes[0]).uri)
        return uri

    def receive_request(self, request: SipRequest) -> None:
        """RFC 3261 §12.2.2: CSeq must increase (else 500); target refresh requests
        (re-INVITE, UPDATE) replace the remote target."""
        seq = request.cseq[0]
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                raise DialogError("CSeq out of order", 500)
            self.remote_seq = seq
        if request.method in ("INVITE", "UPDATE"):
            contact = _contact_uri(request)
            if contact:
                self.remote_target = contact
