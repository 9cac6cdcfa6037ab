"""Registration with a registrar (RFC 3261 §10.2), client side, sans-I/O.

One :class:`Registration` keeps one binding of our Contact to an address-of-record at a
registrar (a trunk that takes calls only from registered users). Like the INVITE sessions it
returns actions for the endpoint to carry out (:class:`~sip._session.SendRequest`, and
:class:`RegistrationChanged` when its state moves) and takes time as ``now``. The endpoint
(:meth:`sip.endpoint.Endpoint.register`) owns its transactions and its timer.

The state machine (everything that moves it is in this file)::

    unregistered ──start──▶ registering ──2xx──▶ registered ──refresh due──▶ registering
          ▲                   │  ▲ 401/407: again with credentials (once per challenge)
          │                   │  └ 423: again with the registrar's Min-Expires
          │                   └──other final, timeout, transport error──▶ failed
          │                                        (retry after a back-off) ──▶ registering
          └── 2xx/any end of the un-REGISTER ◀── unregistering ◀──stop── (any state)

- refresh: at half the interval the registrar granted (the ``expires`` of our Contact in
  its 2xx, else its ``Expires`` header, else what we asked for), §10.2.4;
- back-off after a failure: ``retry_min`` doubled per consecutive failure up to
  ``retry_max`` (a 503's or 500's ``Retry-After`` is honoured when longer), §10.2.8 leaves
  the policy to us;
- the same Call-ID for every REGISTER of the binding, CSeq one up each time (§10.2);
- :meth:`Registration.stop` sends ``Expires: 0`` for our Contact (§10.2.2) when a binding
  may exist, else ends at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from sip._session import SendRequest, header_int
from sip.auth import Credentials, DigestClient, choose_challenge
from sip.headers import NameAddr
from sip.message import SipRequest, SipResponse, new_tag
from sip.uri import SipUri, UriError, parse_uri

__all__ = ["Registration", "RegistrationChanged", "RegistrationConfig", "RegistrationState"]

UNREGISTERED = "unregistered"
REGISTERING = "registering"
REGISTERED = "registered"
FAILED = "failed"
UNREGISTERING = "unregistering"

RegistrationState = str  #: one of the five names above


@dataclass(frozen=True)
class RegistrationConfig:
    """One binding to keep: where, for whom, with which Contact and credentials."""

    name: str  #: the gateway's name (events and logs say it)
    registrar: str  #: Request-URI of the REGISTER, e.g. ``sip:trunk.example.com;transport=tcp``
    aor: str  #: the address-of-record (To and From), e.g. ``sip:alice@trunk.example.com``
    contact: str  #: our Contact URI, e.g. ``sip:alice@192.0.2.1:5060;transport=tcp``
    call_id: str
    credentials: Credentials | None = None
    expires: int = 3600  #: the interval asked for, seconds
    retry_min: float = 5.0  #: first back-off after a failure, seconds
    retry_max: float = 300.0  #: the back-off's cap
    user_agent: str = "softswitch/0.1"

    def __post_init__(self) -> None:
        if self.expires < 1:
            raise ValueError(f"registration {self.name}: expires must be >= 1, not {self.expires}")
        if not 0 < self.retry_min <= self.retry_max:
            raise ValueError(f"registration {self.name}: need 0 < retry_min <= retry_max")


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """The registration called ``name`` moved to ``state``; ``error`` says why it failed
    (``"403 Forbidden"``, ``"timeout"``...), ``expires_at`` when a binding lapses."""

    name: str
    state: RegistrationState
    error: str | None = None
    expires_at: float | None = None
    retry_at: float | None = None


@dataclass
class Registration:
    """One binding's client state. Build it with a :class:`RegistrationConfig`, then
    :meth:`start`; feed it the answers to its requests and its timer."""

    config: RegistrationConfig
    state: RegistrationState = UNREGISTERED
    last_error: str | None = None
    expires_at: float | None = None  #: when the registrar's binding lapses (registered)
    refresh_at: float | None = None
    retry_at: float | None = None
    failures: int = 0  #: consecutive failures (the back-off's exponent)
    registered_count: int = 0  #: 2xx to a REGISTER with a binding, so far
    #: Where the registrar saw our last registered REGISTER come from (RFC 3581 §4: the top
    #: Via's ``received`` and ``rport`` in its 2xx); not our Contact's address behind a NAT.
    seen_as: tuple[str, int] | None = None
    #: Our binding as the registrar's last 2xx listed it, when that is not our Contact (a
    #: registrar behind which NAT handling rewrote it to the address it saw); None: ours.
    bound_contact: str | None = None
    _expires: int = 0  #: the interval asked for next (423 raises it)
    _cseq: int = 0
    _from_tag: str = field(default_factory=new_tag)
    _digest: DigestClient = field(default_factory=DigestClient)
    _auth_tries: int = 0
    _live: SipRequest | None = None  #: our REGISTER awaiting its final response
    #: (transport, address) our last REGISTER went to (the endpoint records it): a stream
    #: connection there that closes means the registrar can no longer reach us on it.
    flow: tuple[str, tuple[str, int]] | None = None

    def __post_init__(self) -> None:
        self._expires = self.config.expires

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def up(self) -> bool:
        """Registered and the binding has not lapsed (as of the last answer)."""
        return self.state == REGISTERED

    # ------------------------------------------------------------------ the shell's calls

    def start(self, now: float) -> list[object]:
        """Register now (from ``unregistered`` or ``failed``)."""
        if self.state in (REGISTERING, UNREGISTERING, REGISTERED):
            return []
        return self._register(now, self._expires)

    def stop(self, now: float) -> list[object]:
        """Remove our binding (``Expires: 0``) if one may exist, else end at once."""
        if self.state in (UNREGISTERED, UNREGISTERING):
            return []
        self.refresh_at = self.retry_at = None
        if self.state == FAILED and self.registered_count == 0:
            return self._move(UNREGISTERED, now)
        return self._register(now, 0)

    def reconnect(self, now: float) -> list[object]:
        """The connection our binding was made over is gone (RFC 5626 §4.5, a transport
        change): register again at once, on a new one. Only from ``registered``: a failed
        registration keeps its back-off, one in progress finishes on its own."""
        if self.state != REGISTERED:
            return []
        self.refresh_at = None
        return self._register(now, self._expires)

    def get_timer(self) -> float | None:
        times = [t for t in (self.refresh_at, self.retry_at) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[object]:
        if self.refresh_at is not None and now >= self.refresh_at and self.state == REGISTERED:
            self.refresh_at = None
            return self._register(now, self._expires)
        if self.retry_at is not None and now >= self.retry_at and self.state == FAILED:
            self.retry_at = None
            return self._register(now, self._expires)
        return []

    def owns(self, request: SipRequest) -> bool:
        return self._live is not None and request.cseq == self._live.cseq

    def on_response(self, request: SipRequest, response: SipResponse, now: float) -> list[object]:
        """A response to one of our REGISTERs (provisional ones change nothing)."""
        if response.status < 200 or not self.owns(request):
            return []
        unregistering = self.state == UNREGISTERING
        status = response.status
        if status in (401, 407):
            retry = self._authenticated_retry(request, response)
            if retry is not None:
                return [retry]
        self._live = None
        if unregistering:
            return self._move(
                UNREGISTERED, now, None if status < 300 else f"{status} {response.reason}"
            )
        if 200 <= status < 300:
            return self._registered(response, now)
        if status == 423 and (min_expires := header_int(response, "Min-Expires")) is not None:
            if min_expires > self._expires:  # §10.2.8: again at once with the registrar's minimum
                self._expires = min_expires
                return self._register(now, min_expires)
        retry_after = header_int(response, "Retry-After") if status in (500, 503) else None
        return self._failed(now, f"{status} {response.reason}", retry_after)

    def on_timeout(self, request: SipRequest, now: float) -> list[object]:
        return self._no_answer(request, now, "timeout (no response from the registrar)")

    def on_transport_error(self, request: SipRequest, now: float) -> list[object]:
        return self._no_answer(request, now, "transport error (registrar unreachable)")

    def on_unreachable(self, request: SipRequest, now: float) -> list[object]:
        return self._no_answer(request, now, "registrar did not resolve")

    # ------------------------------------------------------------------ internals

    def _no_answer(self, request: SipRequest, now: float, error: str) -> list[object]:
        if not self.owns(request):
            return []
        self._live = None
        if self.state == UNREGISTERING:
            return self._move(UNREGISTERED, now, error)
        return self._failed(now, error, None)

    def _register(self, now: float, expires: int) -> list[object]:
        cfg = self.config
        self._cseq += 1
        self._auth_tries = 0
        request = SipRequest("REGISTER", cfg.registrar)
        request.add("Max-Forwards", "70")
        request.add("From", f"<{cfg.aor}>;tag={self._from_tag}")
        request.add("To", f"<{cfg.aor}>")
        request.add("Call-ID", cfg.call_id)
        request.add("CSeq", f"{self._cseq} REGISTER")
        request.add("Contact", f"<{cfg.contact}>")
        request.add("Expires", str(expires))
        request.add("User-Agent", cfg.user_agent)
        self._live = request
        actions: list[object] = [SendRequest(request, cfg.registrar)]
        if expires == 0:
            return self._move(UNREGISTERING, now) + actions
        if self.state != REGISTERED:  # a refresh keeps the state (and the gateway) up
            actions = self._move(REGISTERING, now) + actions
        return actions

    def _authenticated_retry(
        self, request: SipRequest, response: SipResponse
    ) -> SendRequest | None:
        """§22.2: once per challenge; again only for ``stale=true`` (at most 3 in all)."""
        creds = self.config.credentials
        if creds is None:
            return None
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = choose_challenge(response.get_all(header), realm=creds.realm)
        if (
            challenge is None
            or (self._auth_tries >= 1 and not challenge.stale)
            or self._auth_tries >= 3
        ):
            return None
        self._auth_tries += 1
        self._cseq += 1
        retry = SipRequest("REGISTER", request.uri)
        for name, value in request.headers:
            if name.lower() not in ("via", "authorization", "proxy-authorization", "cseq"):
                retry.add(name, value)
        retry.set("CSeq", f"{self._cseq} REGISTER")
        name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        retry.add(name, self._digest.authorization(challenge, creds, "REGISTER", request.uri))
        self._live = retry
        return SendRequest(retry, self.config.registrar)

    def _registered(self, response: SipResponse, now: float) -> list[object]:
        self.seen_as = _seen_as(response)
        granted = self._granted(response)
        if granted <= 0:
            return self._failed(now, "registrar kept no binding for our Contact", None)
        self.failures = 0
        self.registered_count += 1
        self.expires_at = now + granted
        self.refresh_at = now + granted / 2  # §10.2.4: refresh well before it lapses
        self.retry_at = None
        return self._move(REGISTERED, now)

    def _granted(self, response: SipResponse) -> int:
        """The interval the registrar granted our Contact (§10.3 step 8 / §10.2.4).

        Our Contact is the one with our URI; failing that, a registrar that rewrote it (to
        the address it saw the REGISTER come from, as NAT-aware registrars do) is believed
        when one Contact carries our user part at that address (``seen_as``), or when the
        2xx lists a single Contact with our user part."""
        ours = _uri_key(self.config.contact)
        contacts: list[NameAddr] = []
        with contextlib.suppress(ValueError):
            contacts = response.contacts
        self.bound_contact = None
        mine = next((c for c in contacts if _uri_key(str(c.uri)) == ours), None)
        if mine is None and isinstance(ours, tuple) and contacts:
            same_user = [
                c
                for c in contacts
                if isinstance(key := _uri_key(str(c.uri)), tuple) and key[0] == ours[0]
            ]
            seen = self.seen_as
            at_seen = [
                c
                for c in same_user
                if seen is not None
                and isinstance(key := _uri_key(str(c.uri)), tuple)
                and (key[1], key[2] or 5060) == (seen[0].strip("[]").lower(), seen[1])
            ]
            if len(at_seen) == 1:
                mine = at_seen[0]
            elif len(contacts) == 1 and len(same_user) == 1:
                mine = same_user[0]
            if mine is not None:
                self.bound_contact = str(mine.uri)
        if mine is not None:
            value = mine.params.get("expires")
            if value is not None and value.strip().isdigit():
                return int(value)
        expires = header_int(response, "Expires")
        if expires is not None:
            return expires
        return self._expires if not contacts else 0

    def _failed(self, now: float, error: str, retry_after: int | None) -> list[object]:
        self.failures += 1
        delay = min(self.config.retry_max, self.config.retry_min * 2 ** (self.failures - 1))
        if retry_after is not None and retry_after > delay:
            delay = min(float(retry_after), 3600.0)
        self.retry_at = now + delay
        self.refresh_at = None
        self.expires_at = None
        return self._move(FAILED, now, error)

    def _move(self, state: RegistrationState, now: float, error: str | None = None) -> list[object]:
        self.state = state
        if state == FAILED or error is not None:
            self.last_error = error
        elif state == REGISTERED:
            self.last_error = None
        if state == UNREGISTERED:
            self.refresh_at = self.retry_at = self.expires_at = None
        return [
            RegistrationChanged(self.name, state, self.last_error, self.expires_at, self.retry_at)
        ]


def _seen_as(response: SipResponse) -> tuple[str, int] | None:
    """Our address as the registrar saw it: ``received`` (§18.2.1, else the sent-by host) and
    the ``rport`` value (RFC 3581 §4, else the sent-by port) of the top Via."""
    try:
        via = response.top_via
        rport = via.rport
    except (ValueError, LookupError):
        return None
    port = rport if isinstance(rport, int) and not isinstance(rport, bool) else via.port
    return (via.received or via.host, port or 5060)


def contact_address(contact: str) -> tuple[str, int] | None:
    """The host and port (5060 when absent) of a Contact URI, or ``None``."""
    key = _uri_key(contact)
    return (key[1], key[2] or 5060) if isinstance(key, tuple) else None


def _uri_key(text: str) -> tuple[str, str, int | None] | str:
    """What identifies a Contact URI for matching (user, host, port), or the text."""
    try:
        uri = parse_uri(text.strip().strip("<>"))
    except (UriError, ValueError):
        return text
    if not isinstance(uri, SipUri):
        return text
    return (uri.user or "", uri.host.lower().strip("[]"), uri.port)
