"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966).

The parser is hand-written (``str.partition``/``find``) rather than one large regex: URIs
are parsed on every request line, From, To, Contact and Route, so this is on the hot path.

Escaping: the user part, password, parameter values and header values are kept exactly as
received (still %-escaped). RFC 3261 §19.1.4 compares them after unescaping; use
:meth:`SipUri.equivalent` for that. Hosts are kept as given (case preserved); IPv6
references are stored *without* brackets and written back with them.

Relevant ABNF (RFC 3261 §25.1)::

    SIP-URI          =  "sip:" [ userinfo ] hostport
                        uri-parameters [ headers ]
    SIPS-URI         =  "sips:" [ userinfo ] hostport
                        uri-parameters [ headers ]
    userinfo         =  ( user / telephone-subscriber ) [ ":" password ] "@"
    user             =  1*( unreserved / escaped / user-unreserved )
    user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
    password         =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
    hostport         =  host [ ":" port ]
    host             =  hostname / IPv4address / IPv6reference
    hostname         =  *( domainlabel "." ) toplabel [ "." ]
    IPv6reference    =  "[" IPv6address "]"
    port             =  1*DIGIT
    uri-parameters   =  *( ";" uri-parameter)
    uri-parameter    =  transport-param / user-param / method-param
                        / ttl-param / maddr-param / lr-param / other-param
    other-param      =  pname [ "=" pvalue ]
    pname            =  1*paramchar
    pvalue           =  1*paramchar
    paramchar        =  param-unreserved / unreserved / escaped
    param-unreserved =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
    headers          =  "?" header *( "&" header )
    header           =  hname "=" hvalue
    hvalue           =  *( hnv-unreserved / unreserved / escaped )

Since neither ``pname``/``pvalue`` nor ``hvalue`` may contain an unescaped "@", while the
user part may contain ";" and "?" (RFC 4475 §3.1.1.2), the userinfo ends at the *first* "@".
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["UriError", "SipUri", "TelUri", "parse_uri", "split_scheme", "simple_sip_uri"]


class UriError(ValueError):
    """A URI that does not follow its grammar.

    ``unsupported_scheme`` is true when the text is a syntactically valid absolute URI whose
    scheme we do not handle: a UAS answers that with 416 (RFC 3261 §8.2.2.1), anything else
    with 400.
    """

    def __init__(self, message: str, *, unsupported_scheme: bool = False) -> None:
        super().__init__(message)
        self.unsupported_scheme = unsupported_scheme


# RFC 3986 §3.1 / RFC 3261 §25.1:  scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")

# Characters no URI may carry unescaped: controls, SP, DEL, and the delimiters that frame a
# URI inside a header ("<", ">", DQUOTE). Everything else is checked by the structure.
_URI_BAD_CHARS_RE = re.compile(r'[\x00-\x20\x7f<>"]')

#   hostname     =  *( domainlabel "." ) toplabel [ "." ]
#   domainlabel  =  alphanum / alphanum *( alphanum / "-" ) alphanum
#   IPv4address  =  1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
# Checked leniently: labels of alphanumerics, "-" and "_" (seen in the wild) separated by dots.
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
#   IPv6address  =  hexpart [ ":" IPv4address ]   (hex digits, ":" and "." only)
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.\-]+)?\Z")

#   paramchar    =  param-unreserved / unreserved / escaped   (pname / pvalue)
#   unreserved   =  alphanum / mark ;  mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
_PARAMCHARS_RE = re.compile(r"[A-Za-z0-9\[\]/:&+$\-_.!~*'()%]+\Z")

_DEFAULT_PORTS = {"sip": 5060, "sips": 5061}

# The fast path: the URIs real peers send nearly always (``sip:user@host:port;a=b;lr``), in
# one regex that matches only a *subset* of what the general parser below accepts (lower-case
# scheme, no password, no IPv6 reference, no ``?headers``, user and parameters of plain
# characters), so a match is always a valid URI and gives the fields the general parser
# would. Anything else takes the general parser. tests/unit/test_sip_uri_headers.py checks
# the two agree.
_USER_FAST = r"[A-Za-z0-9\-_.!~*'()%&=+$]+"
_HOST_FAST = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"
_PARAM_FAST = r"[A-Za-z0-9\[\]/:&+$\-_.!~*'()%]+"
_SIP_URI_FAST_RE = re.compile(
    rf"(sips?):(?:({_USER_FAST})@)?({_HOST_FAST})(?::([0-9]{{1,5}}))?"
    rf"((?:;{_PARAM_FAST}(?:={_PARAM_FAST})?)*)\Z"
)


def split_scheme(text: str) -> tuple[str, str]:
    """Split ``scheme:rest``; the scheme is returned lower-cased.

    Raises :class:`UriError` when there is no syntactically valid scheme (which is a 400,
    unlike an unknown but valid scheme, a 416).
    """
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.match(scheme):
        raise UriError(f"not an absolute URI: {text[:60]!r}")
    return scheme.lower(), rest


def _parse_uri_params(text: str, what: str) -> dict[str, str | None]:
    """``;name[=value]`` pairs of a SIP URI (RFC 3261 §19.1.1). Names are lower-cased
    (they compare case-insensitively, §19.1.4); values are kept as given."""
    params: dict[str, str | None] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not name or not _PARAMCHARS_RE.match(name):
            raise UriError(f"bad {what} parameter {part!r}")
        if eq:
            if not value or not _PARAMCHARS_RE.match(value):
                raise UriError(f"bad {what} parameter value {part!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1).

    ``user``, ``password``, parameter and header values stay %-escaped as received.
    ``host`` holds an IPv6 address without its brackets. ``params`` keeps the order of the
    text with lower-cased names (``lr`` and other flags map to ``None``); ``headers`` keeps
    names as given.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> SipUri:
        """Parse a SIP/SIPS URI; raises :class:`UriError` (``unsupported_scheme`` set for a
        valid non-SIP scheme)."""
        m = _SIP_URI_FAST_RE.match(text)
        if m is not None:
            uri = _from_fast_match(m)
            if uri is not None:
                return uri
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        """The general parser: every URI of the grammar (and its errors)."""
        head = text[:4]
        if head == "sip:" or head == "SIP:":
            scheme, rest = "sip", text[4:]
        else:
            scheme, rest = split_scheme(text)
            if scheme != "sip" and scheme != "sips":
                raise UriError(f"not a SIP URI: {scheme}", unsupported_scheme=True)
        if not rest or _URI_BAD_CHARS_RE.search(rest):
            raise UriError(f"bad characters in URI {text[:80]!r}")
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            user = rest[:at]
            rest = rest[at + 1 :]
            colon = user.find(":")
            if colon >= 0:
                password = user[colon + 1 :]
                user = user[:colon]
            if not user:
                raise UriError(f"empty user part in {text[:80]!r}")
        headers: dict[str, str] = {}
        q = rest.find("?")
        if q >= 0:
            for part in rest[q + 1 :].split("&"):
                hname, eq, hvalue = part.partition("=")
                if not hname or not eq:
                    raise UriError(f"bad URI header {part!r}")
                headers[hname] = hvalue
            rest = rest[:q]
        semi = rest.find(";")
        if semi >= 0:
            params = _parse_uri_params(rest[semi + 1 :], "URI")
            rest = rest[:semi]
        else:
            params = {}
        host, port = _parse_hostport(rest, text)
        return cls(scheme, user, password, host, port, params, headers)

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            parts.append("@")
        parts.append(_format_host(self.host))
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased (RFC 3261 §19.1.1), or None."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """True when the URI carries the loose-routing flag (RFC 3261 §19.1.1, §16.12)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def secure(self) -> bool:
        """``sips:`` requires TLS on every hop (RFC 3261 §19.1)."""
        return self.scheme == "sips"

    @property
    def default_port(self) -> int:
        """The port to use when none is given and no DNS SRV says otherwise (§19.1.2)."""
        return _DEFAULT_PORTS[self.scheme]

    @property
    def host_port(self) -> str:
        """``host[:port]`` as written in a URI or a Via sent-by (IPv6 bracketed)."""
        host = _format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def copy(self, **changes: object) -> SipUri:
        """A copy with ``changes`` applied; ``params``/``headers`` are copied, never shared."""
        if "params" not in changes:
            changes["params"] = dict(self.params)
        if "headers" not in changes:
            changes["headers"] = dict(self.headers)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def equivalent(self, other: SipUri | TelUri | str) -> bool:
        """URI comparison of RFC 3261 §19.1.4: user and password case-sensitive after
        unescaping, host case-insensitive, ports must both be present or both absent,
        ``user``/``ttl``/``method``/``maddr``/``transport`` must match when present in either,
        other parameters only when present in both, headers all."""
        if isinstance(other, str):
            try:
                other = parse_uri(other)
            except UriError:
                return False
        if not isinstance(other, SipUri) or self.scheme != other.scheme:
            return False
        if _unescape(self.user) != _unescape(other.user):
            return False
        if _unescape(self.password) != _unescape(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for name in set(self.params) | set(other.params):
            if name not in self.params or name not in other.params:
                if name in ("user", "ttl", "method", "maddr", "transport"):
                    return False
                continue
            if _unescape_lower(self.params[name]) != _unescape_lower(other.params[name]):
                return False
        mine_h = {k.lower(): _unescape(v) for k, v in self.headers.items()}
        theirs_h = {k.lower(): _unescape(v) for k, v in other.headers.items()}
        return mine_h == theirs_h


def simple_sip_uri(text: str) -> bool:
    """True when ``text`` is a SIP URI of the fast path's subset (so it parses without
    error); False says nothing either way. The message parser checks Request-URIs with this
    and builds the :class:`SipUri` only when it is read."""
    m = _SIP_URI_FAST_RE.match(text)
    if m is None:
        return False
    port = m.group(4)
    return port is None or int(port) <= 65535


def _from_fast_match(m: re.Match[str]) -> SipUri | None:
    """The :class:`SipUri` of a fast-path match; None when the port is out of range (the
    general parser then says so)."""
    scheme, user, host, port_text, param_text = m.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    params: dict[str, str | None] = {}
    if param_text:
        for part in param_text[1:].split(";"):
            name, eq, value = part.partition("=")
            params[name.lower()] = value if eq else None
    return SipUri(scheme, user, None, host, port, params, {})


def _unescape(value: str | None) -> str | None:
    return None if value is None else unquote(value, errors="surrogateescape")


def _unescape_lower(value: str | None) -> str | None:
    return None if value is None else unquote(value, errors="surrogateescape").lower()


def _parse_hostport(hostport: str, text: str) -> tuple[str, int | None]:
    """``host [ ":" port ]`` with IPv6 references in brackets (RFC 3261 §25.1)."""
    port_text: str | None = None
    if hostport[:1] == "[":
        end = hostport.find("]")
        if end < 0:
            raise UriError(f"unterminated IPv6 reference in {text[:80]!r}")
        host = hostport[1:end]
        if not _IPV6_RE.match(host) or ":" not in host:
            raise UriError(f"bad IPv6 reference in {text[:80]!r}")
        after = hostport[end + 1 :]
        if after:
            if after[0] != ":":
                raise UriError(f"garbage after IPv6 reference in {text[:80]!r}")
            port_text = after[1:]
    else:
        colon = hostport.find(":")
        if colon >= 0:
            host = hostport[:colon]
            port_text = hostport[colon + 1 :]
        else:
            host = hostport
        if not _HOSTNAME_RE.match(host):
            raise UriError(f"bad host in {text[:80]!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise UriError(f"bad port in {text[:80]!r}")
        port = int(port_text)
        if port > 65535:
            raise UriError(f"port out of range in {text[:80]!r}")
    return host, port


#   telephone-subscriber = global-number / local-number               (RFC 3966 §3)
#   global-number-digits = "+" *phonedigit DIGIT *phonedigit
#   local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
#   phonedigit-hex       = HEXDIG / "*" / "#" / [ visual-separator ]
#   visual-separator     = "-" / "." / "(" / ")"
_TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*\Z")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")


@dataclass(slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966). ``number`` keeps its visual separators; parameter names
    are lower-cased."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> TelUri:
        scheme, rest = split_scheme(text)
        if scheme != "tel":
            raise UriError(f"not a tel URI: {scheme}", unsupported_scheme=True)
        if _URI_BAD_CHARS_RE.search(rest):
            raise UriError(f"bad characters in URI {text[:80]!r}")
        number, semi, param_text = rest.partition(";")
        if not _TEL_NUMBER_RE.match(number):
            raise UriError(f"bad telephone number in {text[:80]!r}")
        params = _parse_uri_params(param_text, "tel") if semi else {}
        return cls(number, params)

    def __str__(self) -> str:
        parts = ["tel:", self.number]
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(parts)

    @property
    def is_global(self) -> bool:
        """A global number starts with "+" (E.164); local ones need ``phone-context``
        (RFC 3966 §5.1.5)."""
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §4: they carry no meaning)."""
        return self.number.translate(_VISUAL_SEPARATORS)

    @property
    def phone_context(self) -> str | None:
        return self.params.get("phone-context")

    def copy(self, **changes: object) -> TelUri:
        if "params" not in changes:
            changes["params"] = dict(self.params)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def equivalent(self, other: SipUri | TelUri | str) -> bool:
        """RFC 3966 §4: numbers compare without visual separators, parameters in any order."""
        if isinstance(other, str):
            try:
                other = parse_uri(other)
            except UriError:
                return False
        if not isinstance(other, TelUri):
            return False
        mine = {k: (v.lower() if v else v) for k, v in self.params.items()}
        theirs = {k: (v.lower() if v else v) for k, v in other.params.items()}
        return self.digits.lower() == other.digits.lower() and mine == theirs


def parse_uri(text: str) -> SipUri | TelUri:
    """Parse a SIP, SIPS or tel URI.

    Raises :class:`UriError`; ``err.unsupported_scheme`` tells a valid URI of another
    scheme (answer 416, RFC 3261 §8.2.2.1) from a malformed one (answer 400).
    """
    scheme = text[:5].lower()
    if scheme.startswith(("sip:", "sips:")):
        return SipUri.parse(text)
    if scheme.startswith("tel:"):
        return TelUri.parse(text)
    scheme, _ = split_scheme(text)
    raise UriError(f"unsupported URI scheme {scheme!r}", unsupported_scheme=True)
