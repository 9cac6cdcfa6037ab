"""A registrar for phones (RFC 3261 §10.3), sans-I/O: digest challenges and a bindings table.

Phones (SIP user agents of the configured users) REGISTER their Contact for their
address-of-record ``sip:<user>@<realm>``; calls to the user then go to the bindings
(:meth:`Registrar.lookup`). The endpoint (:class:`sip.endpoint.Endpoint` with
``EndpointConfig.registrar``) hands each out-of-dialog REGISTER to :meth:`Registrar.handle`
inside a non-INVITE server transaction and sends the response it returns.

- Authentication (§22.4, RFC 7616): every REGISTER must carry Digest credentials of the
  AoR's own user (MD5, qop ``auth``). Nonces are made here, stateless: the time they were
  made and an HMAC of it with a per-process secret, valid ``nonce_ttl`` seconds (an older
  one draws ``401`` with ``stale=true``; the phone answers it again without asking its user).
  No or unusable credentials: ``401`` with a fresh challenge; a wrong password, an unknown
  user, or credentials of another user than the AoR's: ``403``. A ``qop`` nonce count that
  does not grow (a replay) is ``401`` stale.
- Bindings (§10.3 steps 6-8): each Contact's ``expires`` parameter, else the ``Expires``
  header, else ``default_expires``; 0 removes it; below ``min_expires`` the request is
  refused with ``423`` and ``Min-Expires``; above ``max_expires`` it is shortened. ``Contact:
  *`` with ``Expires: 0`` removes all the AoR's bindings. A binding updated with the same
  Call-ID needs a higher CSeq (else ``500``, out of order). At most ``max_contacts`` per AoR
  (the oldest goes). The ``200`` lists every binding of the AoR with the seconds it has left.
- Calls from phones: an out-of-dialog INVITE whose From is one of our users' AoRs is
  challenged the same way (:meth:`Registrar.authenticate`, run by the endpoint), so nobody
  calls as ``alice`` without her password.
- NAT (RFC 3581): each binding keeps where the REGISTER came from (the source address when
  the phone's Via asks for ``rport`` or over a stream, else the source host and the Via
  port), and requests to the binding go there (:attr:`Binding.address`) with the Contact as
  Request-URI, as Kamailio's ``fix_nated_register`` does.

Expired bindings are dropped when they are looked at (:meth:`Registrar.lookup`,
:meth:`Registrar.handle`, :meth:`Registrar.bindings`); :class:`BindingsChanged` reports each
AoR whose contacts changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from sip.auth import AuthError, check_response, parse_authorization
from sip.headers import NameAddr
from sip.message import SipParseError, SipRequest, SipResponse, make_response, new_tag
from sip.uri import SipUri

__all__ = ["Binding", "BindingsChanged", "Registrar", "RegistrarConfig"]

Address = tuple[str, int]


@dataclass(frozen=True)
class RegistrarConfig:
    """Who may register and for how long."""

    realm: str  #: the digest realm and the AoRs' host part (``sip:alice@realm``)
    users: Mapping[str, str]  #: user name -> password
    min_expires: int = 60  #: shorter intervals are refused with 423 (§10.3 step 7)
    max_expires: int = 3600  #: longer ones are shortened to this
    default_expires: int = 3600  #: without an ``expires`` parameter or header
    max_contacts: int = 10  #: bindings kept per AoR (the oldest goes first)
    nonce_ttl: float = 300.0  #: seconds a nonce is accepted (then ``stale=true``)
    user_agent: str = "softswitch/0.1"

    def __post_init__(self) -> None:
        if not 0 < self.min_expires <= self.max_expires:
            raise ValueError("registrar: need 0 < min_expires <= max_expires")
        if self.max_contacts < 1:
            raise ValueError("registrar: max_contacts must be >= 1")


@dataclass(frozen=True, slots=True)
class Binding:
    """One Contact registered for a user: where requests for the user go."""

    user: str
    contact: str  #: the Contact URI (the Request-URI of requests to it)
    transport: str  #: the transport the REGISTER came over
    address: Address  #: where it came from (RFC 3581): requests go there
    expires_at: float
    registered_at: float
    call_id: str
    cseq: int
    q: float = 1.0

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True, slots=True)
class BindingsChanged:
    """The bindings of ``user`` changed: ``contacts`` are those left (empty: not registered)."""

    user: str
    contacts: tuple[str, ...]


#: Most nonces whose nonce counts are remembered (replay check), least recently used go.
_MAX_NONCES = 4096


@dataclass
class Registrar:
    """The bindings table and the digest checks; time comes in as ``now``."""

    config: RegistrarConfig
    _bindings: dict[str, list[Binding]] = field(default_factory=dict)  # user -> bindings
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _nonce_counts: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _changed: list[BindingsChanged] = field(default_factory=list)
    stats: dict[str, int] = field(
        default_factory=lambda: {"registered": 0, "challenged": 0, "forbidden": 0}
    )

    # ------------------------------------------------------------------ lookups

    def lookup(self, user: str, now: float) -> list[Binding]:
        """The live bindings of ``user``, best first: highest ``q``, then the newest."""
        bindings = self._live(user, now)
        return sorted(bindings, key=lambda b: (-b.q, -b.registered_at))

    def bindings(self, now: float) -> dict[str, list[Binding]]:
        """Every user with live bindings."""
        for user in list(self._bindings):
            self._live(user, now)
        return {user: list(b) for user, b in self._bindings.items()}

    def claimed_user(self, request: SipRequest, local_hosts: set[str]) -> str | None:
        """The user a request's From claims to be: a configured user at our realm or one of
        ``local_hosts`` (lower-case, no brackets); None otherwise."""
        try:
            uri = request.from_addr.uri
        except (SipParseError, ValueError):
            return None
        if not isinstance(uri, SipUri) or uri.user not in self.config.users:
            return None
        host = uri.host.strip("[]").lower()
        return uri.user if host == self.config.realm.lower() or host in local_hosts else None

    def take_changes(self) -> list[BindingsChanged]:
        """What changed since the last call (for the endpoint's events)."""
        changed, self._changed = self._changed, []
        return changed

    def _live(self, user: str, now: float) -> list[Binding]:
        bindings = self._bindings.get(user)
        if not bindings:
            return []
        live = [b for b in bindings if b.expires_at > now]
        if len(live) != len(bindings):
            self._store(user, live)
        return live

    def _store(self, user: str, bindings: list[Binding]) -> None:
        if bindings:
            self._bindings[user] = bindings
        else:
            self._bindings.pop(user, None)
        self._changed.append(BindingsChanged(user, tuple(b.contact for b in bindings)))

    # ------------------------------------------------------------------ REGISTER

    def handle(
        self, request: SipRequest, transport: str, address: Address, now: float
    ) -> SipResponse:
        """The response to a REGISTER that came over ``transport`` from ``address`` (the
        address answers go to: the RFC 3581 source, see the module doc)."""
        try:
            to_uri = request.to_addr.uri
            contacts = request.contacts
            call_id = request.call_id
            cseq = request.cseq[0]
        except (SipParseError, ValueError, IndexError) as exc:
            return self._response(request, 400, f"Bad Request ({exc})")
        user = to_uri.user if isinstance(to_uri, SipUri) else None
        refusal = self.authenticate(request, user, now)
        if refusal is not None:
            return refusal
        assert user is not None
        header_expires = _int_header(request, "Expires")
        if any(c.uri == "*" for c in contacts):
            # §10.3 step 6: "*" only alone and with Expires: 0.
            if len(contacts) != 1 or header_expires != 0:
                return self._response(request, 400, "Bad Request (Contact * needs Expires: 0)")
            self._store(user, [])
            return self._ok(request, user, now)
        cfg = self.config
        changes: list[tuple[SipUri, int, float]] = []
        for contact in contacts:
            if not isinstance(contact.uri, SipUri):
                return self._response(request, 400, "Bad Request (Contact is not a SIP URI)")
            expires = _int_param(contact, "expires")
            if expires is None:
                expires = header_expires if header_expires is not None else cfg.default_expires
            if 0 < expires < cfg.min_expires:
                response = self._response(request, 423)
                response.add("Min-Expires", str(cfg.min_expires))
                return response
            changes.append((contact.uri, min(expires, cfg.max_expires), _q(contact)))
        bindings = {_key(b.contact): b for b in self._live(user, now)}
        for uri, expires, q in changes:
            key = _key(str(uri))
            old = bindings.get(key)
            if old is not None and old.call_id == call_id and old.cseq >= cseq:
                return self._response(request, 500, "Server Internal Error (out of order CSeq)")
            if expires == 0:
                bindings.pop(key, None)
                continue
            bindings[key] = Binding(
                user=user,
                contact=str(uri),
                transport=transport,
                address=address,
                expires_at=now + expires,
                registered_at=now,
                call_id=call_id,
                cseq=cseq,
                q=q,
            )
        if changes:
            kept = sorted(bindings.values(), key=lambda b: b.registered_at)[-cfg.max_contacts :]
            self._store(user, kept)
            self.stats["registered"] += 1
        return self._ok(request, user, now)

    def _ok(self, request: SipRequest, user: str, now: float) -> SipResponse:
        response = self._response(request, 200)
        for binding in self.lookup(user, now):
            response.add("Contact", f"<{binding.contact}>;expires={binding.expires_in(now)}")
        return response

    # ------------------------------------------------------------------ digest

    def authenticate(self, request: SipRequest, user: str | None, now: float) -> SipResponse | None:
        """None when the request carries valid credentials of ``user``; else the 401/403
        to send (a REGISTER; an INVITE from a phone that says it is one of our users)."""
        values = request.get_all("Authorization")
        if not values:
            return self._challenge(request, now)
        params: dict[str, str] | None = None
        for value in values:
            with contextlib.suppress(AuthError):
                candidate = parse_authorization(value)
                if candidate.get("realm") == self.config.realm:
                    params = candidate
                    break
        if params is None:
            return self._challenge(request, now)
        freshness = self._nonce_age(params["nonce"], now)
        if freshness is None:  # not one of ours
            return self._challenge(request, now)
        password = self.config.users.get(params["username"])
        if (
            password is None
            or params["username"] != user
            or not check_response(params, password, request.method)
        ):
            self.stats["forbidden"] += 1
            return self._response(request, 403)
        if freshness > self.config.nonce_ttl or not self._count_ok(params):
            return self._challenge(request, now, stale=True)
        return None

    def _count_ok(self, params: dict[str, str]) -> bool:
        """RFC 7616 §3.4: with a qop, the nonce count must grow (else a replay)."""
        if not params.get("qop"):
            return True
        try:
            count = int(params.get("nc", ""), 16)
        except ValueError:
            return False
        nonce = params["nonce"]
        seen = self._nonce_counts.pop(nonce, 0)
        self._nonce_counts[nonce] = max(seen, count)
        while len(self._nonce_counts) > _MAX_NONCES:
            self._nonce_counts.popitem(last=False)
        return count > seen

    def _nonce(self, now: float) -> str:
        stamp = f"{int(now * 1000):x}.{new_tag()[:8]}"
        return f"{stamp}.{self._mac(stamp)}"

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since we made ``nonce``, None if we did not make it."""
        stamp, _, mac = nonce.rpartition(".")
        if not stamp or not hmac.compare_digest(self._mac(stamp), mac):
            return None
        try:
            made = int(stamp.split(".", 1)[0], 16) / 1000
        except ValueError:
            return None
        return now - made

    def _challenge(self, request: SipRequest, now: float, *, stale: bool = False) -> SipResponse:
        self.stats["challenged"] += 1
        response = self._response(request, 401)
        challenge = (
            f'Digest realm="{self.config.realm}", nonce="{self._nonce(now)}", '
            'algorithm=MD5, qop="auth"'
        )
        response.add("WWW-Authenticate", challenge + (", stale=true" if stale else ""))
        return response

    def _response(self, request: SipRequest, status: int, reason: str | None = None) -> SipResponse:
        response = make_response(request, status, reason, to_tag=_stateless_tag(request))
        response.add("User-Agent", self.config.user_agent)
        return response


def _stateless_tag(request: SipRequest) -> str:
    return hashlib.sha1(
        (request.call_id or "").encode() + (request.get("CSeq") or "").encode()
    ).hexdigest()[:16]


def _key(contact: str) -> str:
    """What identifies a Contact for the bindings table (§10.3 step 8: URI comparison, here
    the URI text without its header parameters, scheme and host case-folded)."""
    text = contact.strip().strip("<>")
    scheme, _, rest = text.partition(":")
    userinfo, at, hostpart = rest.rpartition("@")
    return f"{scheme.lower()}:{userinfo}{at}{hostpart.lower()}"


def _int_header(request: SipRequest, name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None


def _int_param(contact: NameAddr, name: str) -> int | None:
    value = contact.params.get(name)
    if value is None:
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None


def _q(contact: NameAddr) -> float:
    try:
        return min(1.0, max(0.0, float(contact.params.get("q") or 1.0)))
    except ValueError:
        return 1.0
