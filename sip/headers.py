"""Typed views of SIP header values (RFC 3261 §20, §25.1): Via, name-addr (From, To,
Contact, Route, Record-Route, P-Asserted-Identity...), CSeq, generic parameters and
comma-separated lists.

A :class:`sip.message.SipMessage` keeps header values as text; these classes are built from
that text on demand (and cached by the message), so a message that is only forwarded or
matched never pays for parsing headers nobody reads.

Parameter dictionaries keep the order of the text and lower-case the names (parameter names
compare case-insensitively). A quoted value is stored unquoted as a :class:`QuotedValue`
(a ``str`` subclass), so it is written back quoted; other values are quoted on output only
when they are not tokens.

Errors raise :class:`HeaderError` (a ``ValueError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sip.uri import _SIP_URI_FAST_RE, SipUri, TelUri, UriError, _from_fast_match, split_scheme

__all__ = [
    "HeaderError",
    "QuotedValue",
    "Via",
    "NameAddr",
    "CSeq",
    "parse_params",
    "format_params",
    "split_list",
    "quote_string",
    "unquote_string",
    "simple_name_addr",
    "simple_via",
    "fast_name_addr",
    "fast_via",
]


class HeaderError(ValueError):
    """A header value that does not follow its grammar (answer 400)."""


class QuotedValue(str):
    """A parameter value that arrived as a quoted-string (kept unquoted, written quoted)."""

    __slots__ = ()


#   token       =  1*(alphanum / "-" / "." / "!" / "%" / "*"
#                  / "_" / "+" / "`" / "'" / "~" )
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")

#   gen-value   =  token / host / quoted-string
# Unquoted values are accepted leniently (anything but LWS and the characters that delimit
# parameters, lists and quoted strings); on output a value is written raw only if it is a
# token or a host (IPv6 addresses in received= / maddr=).
_BAD_RAW_VALUE_RE = re.compile(r'[\x00-\x20\x7f";,<>\\]')
_RAW_OK_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+\Z")

#   display-name   =  *(token LWS)/ quoted-string
# We also let non-ASCII characters through unquoted (UTF-8 display names from real phones),
# but reject ASCII separators: RFC 4475 §3.1.2.15 ("baddn").
_DISPLAY_TOKENS_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~\x80-\U0010ffff]+(?:\s+[A-Za-z0-9\-.!%*_+`'~\x80-\U0010ffff]+)*\Z"
)

#   Via               =  ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
#   via-parm          =  sent-protocol LWS sent-by *( SEMI via-params )
#   sent-protocol     =  protocol-name SLASH protocol-version
#                        SLASH transport
#   protocol-name     =  "SIP" / token
#   protocol-version  =  token
#   transport         =  "UDP" / "TCP" / "TLS" / "SCTP" / other-transport
#   sent-by           =  host [ COLON port ]
#   SLASH  =  SWS "/" SWS
_VIA_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(.+)\Z",
    re.S,
)
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_])?\.?\Z")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+\Z")


# ----------------------------------------------------------------- quoted strings

#   quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext         =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair    =  "\" (%x00-09 / %x0B-0C / %x0E-7F)


def _quote_end(text: str, start: int) -> int:
    """Index of the DQUOTE closing the quoted-string that opens at ``text[start]``."""
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    raise HeaderError(f"unterminated quoted string in {text[:80]!r}")


def unquote_string(text: str) -> str:
    """The content of a quoted-string (``text`` includes both DQUOTEs), quoted-pairs
    resolved. Raises :class:`HeaderError` when ``text`` is not exactly one quoted-string."""
    if len(text) < 2 or text[0] != '"' or _quote_end(text, 0) != len(text) - 1:
        raise HeaderError(f"bad quoted string {text[:80]!r}")
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def quote_string(value: str) -> str:
    """``value`` as a quoted-string: DQUOTE and backslash escaped (RFC 3261 §25.1)."""
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not inside a quoted-string."""
    if '"' not in text:
        return text.split(sep)
    parts = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _quote_end(text, i) + 1
            continue
        if c == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_list(value: str) -> list[str]:
    """The elements of a comma-separated header value (RFC 3261 §7.3.1), splitting only on
    commas outside quoted-strings and ``<...>``. Empty elements are dropped."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    if '"' not in value and "<" not in value:
        return [p for p in (part.strip() for part in value.split(",")) if p]
    parts = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = _quote_end(value, i) + 1
            continue
        if c == "<":
            end = value.find(">", i)
            if end < 0:
                raise HeaderError(f"unterminated <...> in {value[:80]!r}")
            i = end + 1
            continue
        if c == ",":
            parts.append(value[start:i])
            start = i + 1
        i += 1
    parts.append(value[start:])
    return [p for p in (part.strip() for part in parts) if p]


# ----------------------------------------------------------------- parameters

#   generic-param  =  token [ EQUAL gen-value ]
#   gen-value      =  token / host / quoted-string
#   SEMI   =  SWS ";" SWS ;  EQUAL  =  SWS "=" SWS


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` header parameters (``generic-param``, RFC 3261 §25.1).

    A leading ";" is optional; LWS around ";" and "=" is allowed. Names are lower-cased,
    a flag maps to ``None``, a quoted value is returned unquoted as a :class:`QuotedValue`.
    Empty parameters (``;;``) and empty values (``a=``) raise :class:`HeaderError`.
    """
    text = text.strip()
    if not text:
        return {}
    if text[0] == ";":
        text = text[1:]
    params: dict[str, str | None] = {}
    for part in _split_outside_quotes(text, ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not _TOKEN_RE.match(name):
            raise HeaderError(f"bad parameter {part.strip()[:60]!r}")
        if eq:
            value = value.strip()
            if value.startswith('"'):
                params[name.lower()] = QuotedValue(unquote_string(value))
            elif not value or _BAD_RAW_VALUE_RE.search(value):
                raise HeaderError(f"bad parameter value {part.strip()[:60]!r}")
            else:
                params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """``;name=value`` text for ``params``; values that are neither tokens nor hosts, and
    values that arrived quoted, are written as quoted-strings."""
    if not params:
        return ""
    parts = []
    for name, value in params.items():
        if value is None:
            parts.append(f";{name}")
        elif type(value) is str and _RAW_OK_RE.match(value):
            parts.append(f";{name}={value}")
        else:
            parts.append(f";{name}={quote_string(value)}")
    return "".join(parts)


def _parse_host_port(text: str, where: str) -> tuple[str, int | None]:
    """``host [ COLON port ]`` with optional LWS around the colon (Via sent-by)."""
    text = text.strip()
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise HeaderError(f"unterminated IPv6 reference in {where}")
        host = text[1:end]
        if not _IPV6_RE.match(host):
            raise HeaderError(f"bad IPv6 reference in {where}")
        after = text[end + 1 :].strip()
        if after:
            if after[0] != ":":
                raise HeaderError(f"garbage after host in {where}")
            port_text = after[1:].strip()
            if not port_text:
                raise HeaderError(f"empty port in {where}")
    else:
        host, colon, port_text = text.partition(":")
        host = host.strip()
        port_text = port_text.strip()
        if colon and not port_text:
            raise HeaderError(f"empty port in {where}")
        if not _HOST_RE.match(host):
            raise HeaderError(f"bad host in {where}")
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise HeaderError(f"bad port in {where}")
        port = int(port_text)
        if port > 65535:
            raise HeaderError(f"port out of range in {where}")
    return host, port


# ----------------------------------------------------------------- Via


@dataclass(slots=True)
class Via:
    """One ``via-parm`` (RFC 3261 §20.42). ``transport`` is upper-cased; an IPv6 ``host``
    is stored without brackets."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one Via element (not a comma list: split those with :func:`split_list`)."""
        m = _VIA_FAST_RE.match(text)
        if m is not None:
            via = _via_from_fast_match(m)
            if via is not None:
                return via
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        """The general parser: every via-parm of the grammar (and its errors)."""
        m = _VIA_RE.match(text.strip())
        if m is None:
            raise HeaderError(f"bad Via {text[:80]!r}")
        name, version, transport, rest = m.groups()
        sent_by, semi, param_text = rest.partition(";")
        host, port = _parse_host_port(sent_by, "Via")
        params = parse_params(param_text) if semi else {}
        protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name.upper()}/{version}"
        return cls(transport.upper(), host, port, params, protocol)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    @property
    def sent_by(self) -> str:
        """``host[:port]`` with an IPv6 host bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def branch(self) -> str | None:
        """The transaction id (§8.1.1.7); RFC 3261 ones start with ``z9hG4bK``."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """Source address added by the receiver when it differs from sent-by (§18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> bool | int | None:
        """RFC 3581: ``None`` when absent, ``True`` when requested (no value), else the port
        the receiver saw the request come from."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        if not value:
            return True
        try:
            return int(value)
        except ValueError:
            raise HeaderError(f"bad rport {value!r}") from None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value and value.isdigit() else None

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the RFC 3261 magic cookie (§8.1.1.7), so it alone
        identifies the transaction (§17.2.3)."""
        branch = self.params.get("branch")
        return bool(branch) and branch.startswith("z9hG4bK")  # type: ignore[union-attr]

    def copy(self) -> Via:
        return Via(self.transport, self.host, self.port, dict(self.params), self.protocol)


# ----------------------------------------------------------------- name-addr

#   From        =  ( "From" / "f" ) HCOLON from-spec
#   from-spec   =  ( name-addr / addr-spec ) *( SEMI from-param )
#   name-addr   =  [ display-name ] LAQUOT addr-spec RAQUOT
#   addr-spec   =  SIP-URI / SIPS-URI / absoluteURI
#   LAQUOT  =  SWS "<"; RAQUOT  =  ">" SWS
#
# RFC 3261 §20.10: in the addr-spec form (no angle brackets) every ";" parameter belongs to
# the header, not the URI, which is why a URI with ",", "?" or ";" must be bracketed.


def _parse_addr_uri(text: str) -> SipUri | TelUri | str:
    """The URI of a name-addr: parsed for sip/sips/tel, kept as text for other schemes."""
    scheme = text[:5].lower()
    try:
        if scheme.startswith(("sip:", "sips:")):
            return SipUri.parse(text)
        if scheme.startswith("tel:"):
            return TelUri.parse(text)
        split_scheme(text)
    except UriError as exc:
        raise HeaderError(str(exc)) from None
    if any(c in text for c in ' \t\r\n<>"'):
        raise HeaderError(f"bad URI {text[:80]!r}")
    return text


@dataclass(slots=True)
class NameAddr:
    """A ``name-addr``/``addr-spec`` with header parameters: the value of From, To, Contact,
    Route, Record-Route, Reply-To, P-Asserted-Identity, Refer-To...

    ``uri`` is a :class:`SipUri` or :class:`TelUri`, or the raw text for other schemes and
    for the ``*`` Contact of a REGISTER. ``display_name`` is unquoted (None when absent).
    URI parameters (``lr``, ``transport``) live in ``uri.params``; header parameters
    (``tag``, ``expires``, ``q``) in ``params``.
    """

    uri: SipUri | TelUri | str
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse one element (split Contact/Route lists with :func:`split_list` first)."""
        m = _NAME_ADDR_FAST_RE.match(text)
        if m is not None:
            addr = _name_addr_from_fast_match(m)
            if addr is not None:
                return addr
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> NameAddr:
        """The general parser: every name-addr / addr-spec of the grammar (and its errors)."""
        text = text.strip()
        if not text:
            raise HeaderError("empty address")
        display: str | None = None
        if text[0] == '"':
            end = _quote_end(text, 0)
            display = unquote_string(text[: end + 1])
            rest = text[end + 1 :].lstrip()
            if not rest.startswith("<"):
                raise HeaderError(f"quoted display name without <URI> in {text[:80]!r}")
            return cls._angle(rest, display, text)
        lt = text.find("<")
        if lt >= 0:
            colon = text.find(":")
            if colon < 0 or lt < colon:
                words = text[:lt].strip()
                if words:
                    if not _DISPLAY_TOKENS_RE.match(words):
                        raise HeaderError(f"unquoted display name is not tokens: {words[:60]!r}")
                    display = " ".join(words.split())
                return cls._angle(text[lt:], display, text)
        if text == "*":
            return cls("*")
        uri_text, semi, param_text = text.partition(";")
        uri_text = uri_text.strip()
        if "?" in uri_text or "," in uri_text:
            raise HeaderError(f"URI with '?' or ',' must be in <...>: {text[:80]!r}")
        uri = _parse_addr_uri(uri_text)
        params = parse_params(param_text) if semi else {}
        return cls(uri, None, params)

    @classmethod
    def _angle(cls, rest: str, display: str | None, text: str) -> NameAddr:
        gt = rest.find(">")
        if gt < 0:
            raise HeaderError(f"missing '>' in {text[:80]!r}")
        uri_text = rest[1:gt]
        if uri_text != uri_text.strip():
            # RFC 4475 §3.1.2.14 ("badaspec"): no LWS inside the angle brackets.
            raise HeaderError(f"whitespace inside <...> in {text[:80]!r}")
        uri = _parse_addr_uri(uri_text)
        tail = rest[gt + 1 :].strip()
        if tail and tail[0] != ";":
            raise HeaderError(f"garbage after '>' in {text[:80]!r}")
        return cls(uri, display, parse_params(tail) if tail else {})

    def __str__(self) -> str:
        if self.uri == "*":
            return "*" + format_params(self.params)
        params = format_params(self.params)
        if self.display_name:
            return f"{quote_string(self.display_name)} <{self.uri}>{params}"
        return f"<{self.uri}>{params}"

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter of From/To (RFC 3261 §19.3)."""
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri | None:
        """``uri`` when it is a SIP/SIPS URI, else None."""
        return self.uri if isinstance(self.uri, SipUri) else None

    @property
    def expires(self) -> int | None:
        """Contact ``expires`` parameter (RFC 3261 §20.10), None when absent or invalid."""
        value = self.params.get("expires")
        return int(value) if value and value.isascii() and value.isdigit() else None

    @property
    def q(self) -> float | None:
        """Contact preference ``q`` (0 to 1), None when absent or invalid."""
        value = self.params.get("q")
        if not value:
            return None
        try:
            q = float(value)
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None

    def copy(self) -> NameAddr:
        uri = self.uri if isinstance(self.uri, str) else self.uri.copy()
        return NameAddr(uri, self.display_name, dict(self.params))


# ----------------------------------------------------------------- the fast paths

# What real peers send nearly always, each in one regex that matches only a *subset* of what
# the general parsers above accept, so that a match is always valid and gives the same value
# (tests/unit/test_sip_uri_headers.py checks both): no LWS but single spaces where shown, no
# quoted parameter values, no backslash in a display name, no comma (one list element), a
# SIP URI of the fast subset of :mod:`sip.uri`. Anything else takes the general parser.
#
#   name-addr      =  [ display-name ] LAQUOT addr-spec RAQUOT
#   display-name   =  *(token LWS)/ quoted-string
#   from-param     =  tag-param / generic-param
_TOKEN_FAST = r"[A-Za-z0-9\-.!%*_+`'~]+"
_VALUE_FAST = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_PARAMS_FAST = rf"((?:;{_TOKEN_FAST}(?:={_VALUE_FAST})?)*)"
_NAME_ADDR_FAST_RE = re.compile(
    # 1: quoted display name, 2: token display name, 3: the URI in <...>; or 4: the URI of
    # an addr-spec (the fast SIP URI without parameters: they belong to the header); 5: params
    rf'(?:(?:"([^"\\]*)"[ \t]*|({_TOKEN_FAST}(?: {_TOKEN_FAST})*)[ \t]*)?<([^<>"\s]+)>'
    rf"|(sips?:[^<>\";,?\s]+)){_PARAMS_FAST}\Z"
)

#   via-parm          =  sent-protocol LWS sent-by *( SEMI via-params )
#   sent-by           =  host [ COLON port ]
_VIA_FAST_RE = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_])?\.?)"
    rf"(?::([0-9]{{1,5}}))?{_PARAMS_FAST}\Z"
)


def _fast_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if text:
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            params[name.lower()] = value if eq else None
    return params


def _name_addr_from_fast_match(m: re.Match[str]) -> NameAddr | None:
    """The :class:`NameAddr` of a fast-path match; None when its URI is not of the fast
    subset (the general parser then decides)."""
    quoted, words, bracketed, bare, param_text = m.groups()
    if bracketed is not None:
        u = _SIP_URI_FAST_RE.match(bracketed)
    else:
        u = _SIP_URI_FAST_RE.match(bare)
        if u is not None and u.group(5):
            return None
    if u is None:
        return None
    uri = _from_fast_match(u)
    if uri is None:
        return None
    return NameAddr(uri, quoted if quoted is not None else words, _fast_params(param_text))


def _via_from_fast_match(m: re.Match[str]) -> Via | None:
    transport, host, port_text, param_text = m.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    return Via(transport.upper(), host, port, _fast_params(param_text), "SIP/2.0")


def fast_name_addr(text: str) -> NameAddr | None:
    """The :class:`NameAddr` of ``text`` when it is of the fast path's subset (what
    :meth:`NameAddr.parse` returns for it), else None: the general parser decides."""
    m = _NAME_ADDR_FAST_RE.match(text)
    return None if m is None else _name_addr_from_fast_match(m)


def fast_via(text: str) -> Via | None:
    """The :class:`Via` of ``text`` when it is one via-parm of the fast path's subset (what
    :meth:`Via.parse` returns for it), else None: the general parser decides."""
    m = _VIA_FAST_RE.match(text)
    return None if m is None else _via_from_fast_match(m)


def simple_name_addr(text: str) -> bool:
    """True when ``text`` is one name-addr/addr-spec of the fast path's subset (so
    :meth:`NameAddr.parse` accepts it); False says nothing either way. The message parser
    checks From, To and Contact with this and builds the :class:`NameAddr` when read."""
    m = _NAME_ADDR_FAST_RE.match(text)
    if m is None:
        return False
    bracketed = m.group(3)
    u = _SIP_URI_FAST_RE.match(bracketed if bracketed is not None else m.group(4))
    if u is None or (bracketed is None and u.group(5)):
        return False
    port = u.group(4)
    return port is None or int(port) <= 65535


def simple_via(text: str) -> bool:
    """True when ``text`` is one via-parm of the fast path's subset (so :meth:`Via.parse`
    accepts it); False says nothing either way."""
    m = _VIA_FAST_RE.match(text)
    if m is None:
        return False
    port = m.group(3)
    return port is None or int(port) <= 65535


# ----------------------------------------------------------------- CSeq

#   CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
# RFC 3261 §8.1.1.5: the sequence number MUST be expressible as a 32-bit unsigned integer
# and be less than 2**31.


@dataclass(slots=True, frozen=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2:
            raise HeaderError(f"bad CSeq {text[:60]!r}")
        number, method = parts
        if not number.isascii() or not number.isdigit() or len(number) > 10:
            raise HeaderError(f"bad CSeq number {number[:20]!r}")
        seq = int(number)
        if seq >= 2**31:
            raise HeaderError(f"CSeq number too large: {number}")
        if not _TOKEN_RE.match(method):
            raise HeaderError(f"bad CSeq method {method[:20]!r}")
        return cls(seq, method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 ``token``."""
    return _TOKEN_RE.match(text) is not None
