"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Pure functions over plain strings, so the module does not depend on the message parser:

* :func:`parse_challenge` / :func:`parse_challenges` read a ``WWW-Authenticate`` or
  ``Proxy-Authenticate`` header value;
* :func:`choose_challenge` / :func:`choose_challenges` pick what to answer when a server offers
  several algorithms (RFC 8760 §2.4) or several realms (RFC 3261 §22.3, forking proxies);
* :class:`DigestClient` builds the ``Authorization`` / ``Proxy-Authorization`` value and keeps the
  only state digest needs on the client: the nonce count per nonce (RFC 7616 §3.4);
* :func:`compute_response` is the bare hash computation (RFC 7616 §3.4.1), exposed for tests;
* server side, :func:`parse_authorization` reads an ``Authorization`` value and
  :func:`check_response` recomputes its ``response`` from the password (the registrar,
  :mod:`sip.registrar`, makes and checks its own nonces).

Supported algorithms: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess; qop
``auth`` and ``auth-int``; the RFC 2069 form when the challenge has no qop; ``userhash``
(RFC 7616 §3.4.4).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ALGORITHMS",
    "AuthError",
    "Challenge",
    "Credentials",
    "DEFAULT_PREFERENCE",
    "DigestClient",
    "choose_challenge",
    "check_response",
    "choose_challenges",
    "compute_response",
    "parse_authorization",
    "parse_challenge",
    "parse_challenges",
]


class AuthError(ValueError):
    """A challenge we cannot parse or answer (not Digest, missing realm/nonce, unknown
    algorithm or qop, credentials for another realm)."""


@dataclass(frozen=True)
class Credentials:
    """A username and password, valid for ``realm`` (``None``: answer any realm)."""

    username: str
    password: str
    realm: str | None = None

    def matches(self, realm: str) -> bool:
        """Whether these credentials may answer a challenge for ``realm``."""
        return self.realm is None or self.realm == realm


@dataclass
class Challenge:
    """One Digest challenge (RFC 7616 §3.3; RFC 3261 §25.1 ``digest-cln``).

    ``algorithm`` is canonicalised to the spelling of RFC 7616 §6.1 when it is one we know
    (``"sha-256"`` becomes ``"SHA-256"``); an absent algorithm means MD5 (RFC 2617 §3.2.1).
    ``qop`` is the list of offered qop values, lower-cased; empty means the RFC 2069 form.
    ``params`` keeps every parameter as received (names lower-cased), unknown ones included.
    """

    scheme: str
    realm: str
    nonce: str
    opaque: str | None = None
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)
    stale: bool = False
    domain: list[str] = field(default_factory=list)
    userhash: bool = False
    charset: str | None = None
    algorithm_given: bool = False
    params: dict[str, str] = field(default_factory=dict)

    @property
    def supported(self) -> bool:
        """Whether :class:`DigestClient` can answer this challenge."""
        if self.algorithm not in ALGORITHMS:
            return False
        return not self.qop or any(q in ("auth", "auth-int") for q in self.qop)


# RFC 7616 §6.1 algorithm names -> hashlib constructor name.
_HASHES: dict[str, str] = {
    "MD5": "md5",
    "SHA-256": "sha256",
    "SHA-512-256": "sha512_256",
}
#: Every algorithm :class:`DigestClient` answers, canonical spelling.
ALGORITHMS: tuple[str, ...] = tuple(name + suffix for name in _HASHES for suffix in ("", "-sess"))
_CANONICAL: dict[str, str] = {a.lower(): a for a in ALGORITHMS}

#: Default order of preference when several challenges are offered for one realm: the
#: strongest hash first (RFC 7616 §3.7 lets the client pick; RFC 8760 §2.4 adds SHA-512-256).
DEFAULT_PREFERENCE: tuple[str, ...] = (
    "SHA-256",
    "SHA-256-sess",
    "SHA-512-256",
    "SHA-512-256-sess",
    "MD5",
    "MD5-sess",
)


# ---------------------------------------------------------------------------------------------
# Parsing.
#
# RFC 3261 §25.1 / §20.44:
#   WWW-Authenticate  =  "WWW-Authenticate" HCOLON challenge
#   challenge         =  ("Digest" LWS digest-cln *(COMMA digest-cln)) / other-challenge
#   other-challenge   =  auth-scheme LWS auth-param *(COMMA auth-param)
#   auth-param        =  auth-param-name EQUAL ( token / quoted-string )
#   quoted-string     =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   quoted-pair       =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
# RFC 7235 §4.1 allows several challenges in one header value, separated by commas; a new
# challenge starts where a token is followed by whitespace and not by "=".
# ---------------------------------------------------------------------------------------------

_WS = " \t\r\n"
_MAX_HEADER = 8192  # bounded input: a challenge longer than this is garbage


def _skip(value: str, i: int, chars: str) -> int:
    n = len(value)
    while i < n and value[i] in chars:
        i += 1
    return i


def _read_token(value: str, i: int) -> tuple[str, int]:
    """Read up to whitespace, ``=``, ``,`` or ``"``; lenient about which characters a token
    holds because real servers send unquoted base64 nonces."""
    start = i
    n = len(value)
    while i < n and value[i] not in _WS and value[i] not in '=,"':
        i += 1
    return value[start:i], i


def _read_quoted(value: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; returns the unescaped content."""
    assert value[i] == '"'
    i += 1
    out: list[str] = []
    n = len(value)
    while i < n:
        c = value[i]
        if c == "\\" and i + 1 < n:
            out.append(value[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise AuthError("unterminated quoted-string in challenge")


def _read_value(value: str, i: int) -> tuple[str, int]:
    if i < len(value) and value[i] == '"':
        return _read_quoted(value, i)
    start = i
    n = len(value)
    while i < n and value[i] not in _WS and value[i] != ",":
        i += 1
    return value[start:i], i


def _split_challenges(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split a header value into ``(scheme, params)`` pairs; names lower-cased, first
    occurrence of a duplicated parameter wins."""
    if len(value) > _MAX_HEADER:
        raise AuthError("challenge too long")
    out: list[tuple[str, dict[str, str]]] = []
    i = 0
    n = len(value)
    while True:
        i = _skip(value, i, _WS + ",")
        if i >= n:
            break
        token, i = _read_token(value, i)
        if not token:
            raise AuthError(f"unexpected character {value[i]!r} in challenge")
        j = _skip(value, i, _WS)
        if j < n and value[j] == "=":
            if not out:
                raise AuthError("challenge parameter before the auth scheme")
            j = _skip(value, j + 1, _WS)
            param, i = _read_value(value, j)
            out[-1][1].setdefault(token.lower(), param)
        else:
            out.append((token, {}))
            i = j
    return out


def _challenge_from(scheme: str, params: dict[str, str]) -> Challenge:
    if scheme.lower() != "digest":
        raise AuthError(f"not a Digest challenge: {scheme!r}")
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None:
        raise AuthError("Digest challenge without realm")
    if nonce is None:
        raise AuthError("Digest challenge without nonce")
    raw_alg = params.get("algorithm")
    algorithm = _CANONICAL.get(raw_alg.lower(), raw_alg) if raw_alg else "MD5"
    qop_raw = params.get("qop")
    qop = [q.strip().lower() for q in qop_raw.split(",") if q.strip()] if qop_raw else []
    domain_raw = params.get("domain")
    return Challenge(
        scheme="Digest",
        realm=realm,
        nonce=nonce,
        opaque=params.get("opaque"),
        algorithm=algorithm,
        qop=qop,
        stale=params.get("stale", "").lower() == "true",
        domain=domain_raw.split() if domain_raw else [],
        userhash=params.get("userhash", "").lower() == "true",
        charset=params.get("charset"),
        algorithm_given=raw_alg is not None,
        params=dict(params),
    )


def parse_challenges(header_value: str) -> list[Challenge]:
    """Every Digest challenge in one header value (RFC 7235 §4.1 allows a comma-separated list);
    challenges of other schemes are skipped. Raises :class:`AuthError` on malformed syntax or a
    Digest challenge missing realm/nonce."""
    return [
        _challenge_from(scheme, params)
        for scheme, params in _split_challenges(header_value)
        if scheme.lower() == "digest"
    ]


def parse_challenge(header_value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value holding one challenge
    (RFC 3261 §20.44, RFC 7616 §3.3).

    Robust to spacing and folding, quoted strings holding commas, unknown parameters and the
    case of names. Raises :class:`AuthError` (a ``ValueError``) if the scheme is not Digest or
    realm/nonce is missing. If the value holds several challenges, the first is returned.
    """
    parts = _split_challenges(header_value)
    if not parts:
        raise AuthError("empty challenge")
    return _challenge_from(*parts[0])


def _rank(challenge: Challenge, preference: Sequence[str] | None) -> int:
    if preference is None:
        return 0
    try:
        return list(preference).index(challenge.algorithm)
    except ValueError:
        return len(preference)


def _parse_all(values: Iterable[str]) -> list[Challenge]:
    found: list[Challenge] = []
    for value in values:
        try:
            found.extend(parse_challenges(value))
        except AuthError:
            continue  # one broken header must not hide a good one next to it
    return [c for c in found if c.supported]


def choose_challenge(
    values: Iterable[str],
    *,
    realm: str | None = None,
    preference: Sequence[str] | None = DEFAULT_PREFERENCE,
) -> Challenge | None:
    """Pick the challenge to answer among several header values (RFC 8760 §2.4).

    Unparseable and unsupported challenges are skipped. With the default ``preference`` the
    strongest algorithm wins (SHA-256 > SHA-512-256 > MD5), the topmost among equals; with
    ``preference=None`` the topmost supported challenge wins, which is RFC 8760's SHOULD.
    ``realm`` restricts the choice to one realm. Returns ``None`` if nothing can be answered.
    """
    candidates = [c for c in _parse_all(values) if realm is None or c.realm == realm]
    if not candidates:
        return None
    # min() is stable: among equal ranks the topmost wins.
    return min(candidates, key=lambda c: _rank(c, preference))


def choose_challenges(
    values: Iterable[str], *, preference: Sequence[str] | None = DEFAULT_PREFERENCE
) -> list[Challenge]:
    """One challenge per realm, in the order realms first appear: a request forked by a proxy can
    come back with a 401/407 carrying challenges from several realms, and the UAC answers each
    of them in the retried request (RFC 3261 §22.3)."""
    best: dict[str, Challenge] = {}
    for c in _parse_all(values):
        kept = best.get(c.realm)
        if kept is None or _rank(c, preference) < _rank(kept, preference):
            best[c.realm] = c
    return list(best.values())


# ---------------------------------------------------------------------------------------------
# Computing the response (RFC 7616 §3.4.1–§3.4.3, RFC 2617 §3.2.2, RFC 2069 §2.1.1).
# ---------------------------------------------------------------------------------------------


def _hasher(algorithm: str) -> Callable[[bytes], str]:
    canonical = _CANONICAL.get(algorithm.lower())
    if canonical is None:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    name = _HASHES[canonical.removesuffix("-sess")]

    def h(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return h


def _b(s: str) -> bytes:
    return s.encode("utf-8")


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` parameter, lower-case hex (RFC 7616 §3.4.1).

    ``A1 = username ":" realm ":" password``; for ``-sess`` algorithms
    ``A1 = H(username ":" realm ":" password) ":" nonce ":" cnonce`` (§3.4.2).
    ``A2 = method ":" uri``, plus ``":" H(body)`` for ``qop=auth-int`` (§3.4.3).
    With a qop: ``KD(H(A1), nonce ":" nc ":" cnonce ":" qop ":" H(A2))``; without one, the
    RFC 2069 form ``KD(H(A1), nonce ":" H(A2))``. ``username`` is the user's real name even when
    the header carries the userhash (§3.4.4). Strings are hashed as UTF-8.
    """
    h = _hasher(algorithm)
    ha1 = h(_b(f"{username}:{realm}:{password}"))
    if algorithm.lower().endswith("-sess"):
        if cnonce is None:
            raise AuthError(f"{algorithm} needs a cnonce")
        ha1 = h(_b(f"{ha1}:{nonce}:{cnonce}"))
    if qop == "auth-int":
        ha2 = h(_b(f"{method}:{uri}:") + _b(h(body)))
    elif qop in (None, "auth"):
        ha2 = h(_b(f"{method}:{uri}"))
    else:
        raise AuthError(f"unsupported qop {qop!r}")
    if qop is None:
        return h(_b(f"{ha1}:{nonce}:{ha2}"))
    if nc is None or cnonce is None:
        raise AuthError("qop needs nc and cnonce")
    return h(_b(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))


def _quote(s: str) -> str:
    """A quoted-string (RFC 3261 §25.1): escape backslash and double quote."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Digest state for one peer (a gateway, a registrar, a dialog): the nonce count per nonce
    and cnonce generation (RFC 7616 §3.4: ``nc`` counts the requests sent with one nonce, so a
    server can detect replays).

    Reuse one instance for every request answered with the same server's nonces; nc then
    grows 00000001, 00000002… per nonce. ``cnonce_factory`` exists for tests (published vectors
    use fixed cnonces); ``max_nonces`` bounds the remembered nonces (least recently used go).
    """

    def __init__(
        self,
        *,
        cnonce_factory: Callable[[], str] | None = None,
        max_nonces: int = 64,
    ) -> None:
        self._cnonce = cnonce_factory or _default_cnonce
        self._max_nonces = max_nonces
        self._nc: OrderedDict[str, int] = OrderedDict()

    def _next_nc(self, nonce: str) -> int:
        count = self._nc.pop(nonce, 0) + 1
        self._nc[nonce] = count
        while len(self._nc) > self._max_nonces:
            self._nc.popitem(last=False)
        return count

    def nonce_count(self, nonce: str) -> int:
        """How many requests were answered with ``nonce`` so far (0 if none)."""
        return self._nc.get(nonce, 0)

    def authorization(
        self,
        challenge: Challenge,
        creds: Credentials,
        method: str,
        uri: str,
        body: bytes = b"",
    ) -> str:
        """The ``Authorization`` / ``Proxy-Authorization`` header value answering ``challenge``
        for a request ``method`` to Request-URI ``uri`` with message body ``body``
        (RFC 3261 §22.2/§22.3, RFC 7616 §3.4).

        qop: ``auth`` when offered, else ``auth-int`` (which hashes ``body``), else the RFC 2069
        form without cnonce/nc. ``opaque`` is echoed; ``algorithm`` is always sent (MD5 when the
        challenge omitted it, as RFC 3261 §22.4 shows); with ``userhash=true`` the username
        parameter carries ``H(username ":" realm)`` (RFC 7616 §3.4.4).
        """
        uri = str(uri)  # tolerate a URI object: the digest covers its serialized form
        if isinstance(body, str):
            body = body.encode("utf-8")
        if challenge.scheme.lower() != "digest":
            raise AuthError(f"cannot answer {challenge.scheme!r} challenges")
        if not creds.matches(challenge.realm):
            raise AuthError(
                f"credentials are for realm {creds.realm!r}, challenge is for {challenge.realm!r}"
            )
        algorithm = _CANONICAL.get(challenge.algorithm.lower())
        if algorithm is None:
            raise AuthError(f"unsupported digest algorithm {challenge.algorithm!r}")
        if not challenge.qop:
            qop = None
        elif "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        else:
            raise AuthError(f"no supported qop in {challenge.qop!r}")

        nc = cnonce = None
        if qop is not None or algorithm.endswith("-sess"):
            cnonce = self._cnonce()
        if qop is not None:
            nc = f"{self._next_nc(challenge.nonce):08x}"

        response = compute_response(
            algorithm=algorithm,
            username=creds.username,
            realm=challenge.realm,
            password=creds.password,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        username = creds.username
        if challenge.userhash:
            username = _hasher(algorithm)(_b(f"{creds.username}:{challenge.realm}"))

        # RFC 3261 §25.1 dig-resp: realm, nonce, uri, response, cnonce, opaque are quoted;
        # algorithm, qop and nc are tokens.
        parts = [
            f"username={_quote(username)}",
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
            f"algorithm={algorithm}",
        ]
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop is not None:
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc}")
        if challenge.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    def respond(
        self,
        values: Iterable[str],
        credentials: Credentials | Sequence[Credentials],
        method: str,
        uri: str,
        body: bytes = b"",
        *,
        preference: Sequence[str] | None = DEFAULT_PREFERENCE,
    ) -> list[str]:
        """Answer a 401/407: the header values to add to the retried request, one per realm for
        which some credentials match (RFC 3261 §22.3). ``values`` are the WWW-Authenticate (or
        Proxy-Authenticate) values of the response. An empty list means we cannot answer, and the
        caller should give up with the 401/407 as the final response."""
        pool = [credentials] if isinstance(credentials, Credentials) else list(credentials)
        out: list[str] = []
        for challenge in choose_challenges(values, preference=preference):
            # Credentials bound to this realm win over wildcard ones.
            chosen = next((c for c in pool if c.realm == challenge.realm), None)
            if chosen is None:
                chosen = next((c for c in pool if c.realm is None), None)
            if chosen is not None:
                out.append(self.authorization(challenge, chosen, method, uri, body))
        return out


# ---------------------------------------------------------------------------------------------
# Server side (RFC 3261 §22.4, RFC 7616 §3.4): reading credentials and checking them.
#   Authorization     =  "Authorization" HCOLON credentials
#   credentials       =  ("Digest" LWS digest-response) / other-response
#   digest-response   =  dig-resp *(COMMA dig-resp)
# ---------------------------------------------------------------------------------------------


def parse_authorization(header_value: str) -> dict[str, str]:
    """The parameters of a Digest ``Authorization``/``Proxy-Authorization`` value (names
    lower-cased, quotes removed). Raises :class:`AuthError` when it is not Digest or lacks
    one of username, realm, nonce, uri, response."""
    parts = _split_challenges(header_value)
    if not parts or parts[0][0].lower() != "digest":
        raise AuthError("not Digest credentials")
    params = parts[0][1]
    missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in params]
    if missing:
        raise AuthError(f"Digest credentials without {', '.join(missing)}")
    return params


def check_response(params: dict[str, str], password: str, method: str, body: bytes = b"") -> bool:
    """Do these credentials (:func:`parse_authorization`) carry the response that
    ``password`` gives for ``method`` (RFC 7616 §3.4.1)? Compared in constant time; an
    unknown algorithm or qop, or a qop without nc/cnonce, is False."""
    try:
        expected = compute_response(
            algorithm=params.get("algorithm") or "MD5",
            username=params["username"],
            realm=params["realm"],
            password=password,
            nonce=params["nonce"],
            method=method,
            uri=params["uri"],
            qop=(params.get("qop") or None),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            body=body,
        )
    except (AuthError, KeyError):
        return False
    return hmac.compare_digest(expected, params["response"].lower())
