"""SIP messages: parse and serialize (RFC 3261 §7, §18.3, §20, §25).

A message is a start line, an ordered list of ``(name, value)`` header pairs and a body.
Header names are canonicalised on the way in (compact forms expanded, case fixed for the
headers we know; unknown names keep their spelling and compare case-insensitively), values
are stripped and unfolded. Typed views (:class:`~sip.headers.Via`,
:class:`~sip.headers.NameAddr`, CSeq) are parsed on demand and cached against the raw value
they came from, so changing a header through :meth:`SipMessage.set` (or even by editing
``headers`` directly) never returns a stale view.

:func:`parse_message` parses one datagram; :class:`StreamFramer` cuts a TCP/TLS byte stream
into messages by Content-Length (§18.3). Malformed input raises :class:`SipParseError`,
which carries the status to answer with (400, 413, 416, 505) and, when the headers could be
read, the partial message so that the caller can build that answer with
:func:`make_response`.

Grammar (RFC 3261 §25.1)::

    SIP-message    =  Request / Response
    Request        =  Request-Line *( message-header ) CRLF [ message-body ]
    Request-Line   =  Method SP Request-URI SP SIP-Version CRLF
    Response       =  Status-Line *( message-header ) CRLF [ message-body ]
    Status-Line    =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
    SIP-Version    =  "SIP" "/" 1*DIGIT "." 1*DIGIT
    Status-Code    =  3DIGIT
    Reason-Phrase  =  *(reserved / unreserved / escaped
                      / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
    message-header =  header-name HCOLON header-value CRLF
    HCOLON         =  *( SP / HTAB ) ":" SWS
    LWS            =  [*WSP CRLF] 1*WSP ; linear whitespace
    Content-Length =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
"""

from __future__ import annotations

import re
import secrets
from itertools import islice

from sip.headers import CSeq, HeaderError, NameAddr, Via, is_token, split_list
from sip.uri import SipUri, TelUri, UriError, parse_uri

__all__ = [
    "SipParseError",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "REASON_PHRASES",
    "canonical_name",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "parse_message",
    "make_response",
    "is_request",
    "StreamFramer",
    "new_branch",
    "new_tag",
    "new_call_id",
    "BRANCH_MAGIC_COOKIE",
]


class SipParseError(ValueError):
    """Malformed SIP input.

    ``status`` is the response to send for a request (400, 413 too large, 416 unsupported
    URI scheme, 505 version); 0 means "nothing to answer, drop silently" (a keepalive).
    ``reason`` is the human reason, usable as the reason phrase
    (``"Bad Request - missing Call-ID"``). ``partial`` is the message as far as it could be
    read (start line and headers) or None: with it a UAS can still answer a bad request
    (RFC 3261 §8.2: the response needs the request's Via, From, To, Call-ID and CSeq).
    A response is never answered: the caller just drops it.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        *,
        partial: SipRequest | SipResponse | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
        #: Messages a :class:`StreamFramer` completed in the same ``feed`` call before
        #: this error; the caller should still process them.
        self.messages: list[SipRequest | SipResponse] = []
        #: Set by :class:`StreamFramer`: True when framing is lost and the connection must
        #: be closed; False when the bad message was skipped and feeding may continue.
        self.fatal = True


BRANCH_MAGIC_COOKIE = "z9hG4bK"

# RFC 3261 §7.3.3 and the IANA "Header Fields" registry: compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_HEADERS = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
    "Call-Info", "Contact", "Content-Disposition", "Content-Encoding", "Content-ID",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Diversion",
    "Error-Info", "Event", "Expires", "Flow-Timer", "From", "Geolocation", "History-Info",
    "Identity", "Identity-Info", "In-Reply-To", "Join", "Max-Breadth", "Max-Forwards",
    "MIME-Version", "Min-Expires", "Min-SE", "Organization", "P-Access-Network-Info",
    "P-Asserted-Identity", "P-Associated-URI", "P-Called-Party-ID", "P-Charging-Vector",
    "P-Early-Media", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-Sub", "Refer-To", "Referred-By", "Reject-Contact",
    "Remote-Party-ID", "Replaces", "Reply-To", "Request-Disposition", "Require",
    "Resource-Priority", "Retry-After", "Route", "RSeq", "Security-Client", "Security-Server",
    "Security-Verify", "Server", "Service-Route", "Session-Expires", "Session-ID",
    "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State", "Supported",
    "Target-Dialog", "Timestamp", "To", "Unsupported", "User-Agent", "User-to-User", "Via",
    "Warning", "WWW-Authenticate",
)  # fmt: skip

# name as written -> canonical name: exact canonical spellings first (the common case),
# then lower-cased names and the compact forms in both cases.
_CANON: dict[str, str] = {}
for _name in _KNOWN_HEADERS:
    _CANON[_name] = _name
    _CANON[_name.lower()] = _name
for _short, _long in COMPACT_FORMS.items():
    _CANON[_short] = _long
    _CANON[_short.upper()] = _long
del _name, _short, _long
_KNOWN_SET = frozenset(_KNOWN_HEADERS)

#: Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): :meth:`get_all`
#: returns their elements. Authentication headers, Date and the like are never split.
LIST_HEADERS: frozenset[str] = frozenset((
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Accept-Resource-Priority",
    "Alert-Info", "Allow", "Allow-Events", "Call-Info", "Contact", "Content-Encoding",
    "Content-Language", "Diversion", "Error-Info", "History-Info", "In-Reply-To",
    "P-Asserted-Identity", "P-Associated-URI", "P-Early-Media", "P-Preferred-Identity", "Path",
    "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Remote-Party-ID",
    "Request-Disposition", "Require", "Resource-Priority", "Route", "Security-Client",
    "Security-Server", "Security-Verify", "Service-Route", "Supported", "Unsupported", "Via",
    "Warning",
))  # fmt: skip

# RFC 3261 §8.1.1: the headers every request carries (Max-Forwards is tolerated missing);
# responses copy the same ones (§8.2.6.2).
_MANDATORY = frozenset(("Via", "From", "To", "Call-ID", "CSeq"))
# Headers that may appear once only (their grammar has no comma list; RFC 4475 "multi01").
_SINGLE = frozenset(("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type"))

_KNOWN_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
))  # fmt: skip

#   SIP-Version  =  "SIP" "/" 1*DIGIT "." 1*DIGIT
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)

# RFC 3261 §21 and later extensions (RFC 3265, 3329, 3892, 4028, 4412, 4474, 5079, 5360,
# 5393, 5839, 6442, 8197, 8224, 8599, 8688).
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    424: "Bad Location Information",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity Info",
    437: "Unsupported Credential",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error", 6: "Global Failure"}  # fmt: skip


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: ``call-id``/``i``/``CALL-ID`` ->
    ``Call-ID``, ``www-authenticate`` -> ``WWW-Authenticate``, ``cseq`` -> ``CSeq``.

    Header names are case-insensitive (RFC 3261 §7.3.1); names we do not know keep the
    spelling they were given (``X-PH-foo`` stays ``X-PH-foo``) and compare case-insensitively.
    """
    canon = _CANON.get(name)
    if canon is not None:
        return canon
    return _CANON.get(name.lower(), name)


def _check_header(name: str, value: str) -> None:
    """Refuse names that are not tokens and values that would break the framing (header
    injection through application-supplied values such as X- headers)."""
    if not is_token(name):
        raise ValueError(f"header name is not a token: {name!r}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"CR, LF or NUL in the value of {name}")


class SipMessage:
    """Headers and body shared by requests and responses.

    ``headers`` is the ordered list of ``(canonical name, value)`` pairs. Use the methods to
    change it; if you edit the list directly, write canonical names (:func:`canonical_name`).
    Typed views (``top_via``, ``from_addr``...) are parsed on first use and shared: treat them
    as read-only and write changes back with :meth:`set` (``msg.set("To", str(to))``).
    """

    __slots__ = ("headers", "body", "_cache")

    def __init__(self, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.headers: list[tuple[str, str]] = (
            [(canonical_name(n), v) for n, v in headers] if headers else []
        )
        self.body: bytes = body
        self._cache: dict[str, tuple[str, object]] = {}

    # ------------------------------------------------------------ header access

    def get(self, name: str) -> str | None:
        """The value of the first header line called ``name`` (case-insensitive, compact
        forms accepted), or None. For list headers this is the whole line, not its first
        element; see :meth:`get_all`."""
        canon = _CANON.get(name) or _CANON.get(name.lower())
        if canon is not None:
            for n, v in self.headers:
                if n == canon:
                    return v
            return None
        low = name.lower()
        for n, v in self.headers:
            if n.lower() == low:
                return v
        return None

    def _lines(self, name: str) -> list[str]:
        canon = _CANON.get(name) or _CANON.get(name.lower())
        if canon is not None:
            return [v for n, v in self.headers if n == canon]
        low = name.lower()
        return [v for n, v in self.headers if n.lower() == low]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order. For list headers (:data:`LIST_HEADERS`: Via,
        Route, Record-Route, Contact, Allow, Supported...) each line is split into its
        elements on commas outside quotes and ``<...>`` (RFC 3261 §7.3.1), so
        ``Via: a, b`` + ``Via: c`` gives ``[a, b, c]``."""
        lines = self._lines(name)
        if not lines or canonical_name(name) not in LIST_HEADERS:
            return lines
        out: list[str] = []
        try:
            for value in lines:
                out.extend(split_list(value))
        except HeaderError as exc:
            raise SipParseError(f"Bad Request - bad {canonical_name(name)} header") from exc
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header by one with ``value`` (at the position of the first),
        or append it when absent."""
        canon = canonical_name(name)
        _check_header(canon, value)
        low = canon.lower()
        new: list[tuple[str, str]] = []
        placed = False
        for n, v in self.headers:
            if n == canon or n.lower() == low:
                if not placed:
                    new.append((n, value))  # keeps the spelling an unknown name already had
                    placed = True
            else:
                new.append((n, v))
        if not placed:
            new.append((canon, value))
        self.headers = new

    def add(self, name: str, value: str) -> None:
        """Append a header line (after any existing ones of the same name)."""
        canon = canonical_name(name)
        _check_header(canon, value)
        self.headers.append((canon, value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before the first one of the same name, or at the top: how a
        new Via goes on (RFC 3261 §8.1.1.7, §16.6 step 8)."""
        canon = canonical_name(name)
        _check_header(canon, value)
        low = canon.lower()
        for i, (n, _) in enumerate(self.headers):
            if n == canon or n.lower() == low:
                self.headers.insert(i, (canon, value))
                return
        self.headers.insert(0, (canon, value))

    def remove(self, name: str) -> None:
        """Remove every header line called ``name``."""
        low = canonical_name(name).lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != low]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    # ------------------------------------------------------------ typed views

    def _view(self, key: str, raw: str, parser: object) -> object:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == raw:
            return hit[1]
        try:
            value = parser(raw)  # type: ignore[operator]
        except ValueError as exc:
            if isinstance(exc, SipParseError):
                raise
            raise SipParseError(f"Bad Request - bad {key} header") from exc
        self._cache[key] = (raw, value)
        return value

    def _required(self, name: str) -> str:
        raw = self.get(name)
        if raw is None:
            raise SipParseError(f"Bad Request - missing {name}")
        return raw

    @property
    def call_id(self) -> str:
        """The Call-ID (§20.8); raises :class:`SipParseError` when missing."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` from CSeq (§20.16)."""
        c: CSeq = self._view("CSeq", self._required("CSeq"), CSeq.parse)  # type: ignore[assignment]
        return c.seq, c.method

    @property
    def top_via(self) -> Via:
        """The first Via element (§8.1.1.7): where responses go, and the transaction id."""
        return self._view("Via", self._required("Via"), _parse_first_via)  # type: ignore[return-value]

    @property
    def vias(self) -> list[Via]:
        """Every Via element, top first."""
        return [self._view(f"Via#{v}", v, Via.parse) for v in self.get_all("Via")]  # type: ignore[misc]

    @property
    def branch(self) -> str | None:
        """The top Via's branch parameter (RFC 3261 §8.1.1.7), or None."""
        return self.top_via.params.get("branch")

    @property
    def from_addr(self) -> NameAddr:
        """The From header as a :class:`NameAddr` (§20.20)."""
        return self._view("From", self._required("From"), NameAddr.parse)  # type: ignore[return-value]

    @property
    def to_addr(self) -> NameAddr:
        """The To header as a :class:`NameAddr` (§20.39)."""
        return self._view("To", self._required("To"), NameAddr.parse)  # type: ignore[return-value]

    @property
    def from_tag(self) -> str | None:
        return self.from_addr.params.get("tag")

    @property
    def to_tag(self) -> str | None:
        return self.to_addr.params.get("tag")

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact element parsed (§20.10); ``[]`` when there is none. A REGISTER's
        ``Contact: *`` gives one NameAddr whose ``uri`` is ``"*"``."""
        lines = self._lines("Contact")
        if not lines:
            return []
        raw = lines[0] if len(lines) == 1 else ", ".join(lines)
        return self._view("Contact", raw, _parse_contacts)  # type: ignore[return-value]

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (§20.22) as an int, None when absent."""
        raw = self.get("Max-Forwards")
        if raw is None:
            return None
        return self._view("Max-Forwards", raw, _parse_max_forwards)  # type: ignore[return-value]

    @property
    def content_type(self) -> str | None:
        """The media type of the body, lower-cased and without parameters
        (``application/sdp``), or None."""
        raw = self.get("Content-Type")
        if raw is None:
            return None
        return raw.partition(";")[0].strip().lower() or None

    # ------------------------------------------------------------ output

    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The message as bytes: start line, headers, a Content-Length computed from the body
        (replacing any Content-Length header in place, else last), CRLF, body."""
        body = self.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = [self._start_line()]
        length_written = False
        for n, v in self.headers:
            if n == "Content-Length":
                if length_written:
                    continue
                v = str(len(body))
                length_written = True
            lines.append(f"{n}: {v}")
        if not length_written:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("")
        lines.append("")
        text = "\r\n".join(lines)
        # One check for the whole head instead of one per header: every CR must be part of
        # a line end we wrote, or a value smuggled a line break (header injection).
        if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
            raise ValueError("CR or LF inside a header name or value")
        return text.encode("utf-8") + body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def _copy_into(self, other: SipMessage) -> None:
        other.headers = list(self.headers)
        other.body = self.body
        other._cache = dict(self._cache)


class SipRequest(SipMessage):
    """A SIP request. ``uri`` is the Request-URI as text; :attr:`request_uri` parses it."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def _start_line(self) -> str:
        if " " in self.method or " " in self.uri:
            raise ValueError("space in method or Request-URI")
        return f"{self.method} {self.uri} SIP/2.0"

    @property
    def request_uri(self) -> SipUri | TelUri:
        """The Request-URI parsed; :class:`SipParseError` 416 for a scheme other than
        sip/sips/tel (RFC 3261 §8.2.2.1), 400 when malformed."""
        return self._view("@uri", self.uri, _parse_request_uri)  # type: ignore[return-value]

    def copy(self) -> SipRequest:
        """A copy with its own header list (values and body are immutable, so shared)."""
        other = SipRequest(self.method, self.uri)
        self._copy_into(other)
        return other

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} call-id={self.get('Call-ID')!r}>"


class SipResponse(SipMessage):
    """A SIP response. ``reason`` defaults to the RFC phrase for ``status``."""

    __slots__ = ("status", "reason")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else default_reason(status)

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def copy(self) -> SipResponse:
        other = SipResponse(self.status, self.reason)
        self._copy_into(other)
        return other

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} call-id={self.get('Call-ID')!r}>"


def default_reason(status: int) -> str:
    """The RFC reason phrase for ``status``, or a generic one for its class."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return _CLASS_REASONS.get(status // 100, "Unknown")


def is_request(msg: object) -> bool:
    """True for a :class:`SipRequest`."""
    return isinstance(msg, SipRequest)


# ----------------------------------------------------------------- typed-view parsers


def _parse_first_via(raw: str) -> Via:
    elements = split_list(raw)
    if not elements:
        raise HeaderError("empty Via")
    return Via.parse(elements[0])


def _parse_contacts(raw: str) -> list[NameAddr]:
    contacts = [NameAddr.parse(v) for v in split_list(raw)]
    if len(contacts) > 1 and any(c.uri == "*" for c in contacts):
        # RFC 3261 §10.2.2: "*" stands alone.
        raise HeaderError("'*' Contact mixed with others")
    return contacts


def _parse_max_forwards(raw: str) -> int:
    # Max-Forwards = "Max-Forwards" HCOLON 1*DIGIT ; §20.22: an integer in the range 0-255.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 5 or int(raw) > 255:
        raise HeaderError(f"bad Max-Forwards {raw[:20]!r}")
    return int(raw)


def _parse_request_uri(raw: str) -> SipUri | TelUri:
    try:
        uri = parse_uri(raw)
    except UriError as exc:
        if exc.unsupported_scheme:
            raise SipParseError("Unsupported URI Scheme", 416) from exc
        raise SipParseError("Bad Request - malformed Request-URI") from exc
    if isinstance(uri, SipUri) and uri.headers:
        # §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 "escruri").
        raise SipParseError("Bad Request - headers in Request-URI")
    return uri


def _parse_content_length(values: list[str]) -> int:
    """All Content-Length values must be the same non-negative integer."""
    length: int | None = None
    for raw in values:
        if not raw.isascii() or not raw.isdigit():
            raise SipParseError("Bad Request - bad Content-Length")
        value = int(raw)
        if length is not None and value != length:
            raise SipParseError("Bad Request - conflicting Content-Length")
        length = value
    assert length is not None
    return length


# ----------------------------------------------------------------- parsing


def _parse_head(head: bytes) -> tuple[SipRequest | SipResponse, int | None]:
    """Parse the start line and headers (everything before the empty line).

    Returns the message (empty body) and the Content-Length, None when absent.
    """
    if b"\x00" in head and head.count(b"\x00") != head.count(b"\\\x00"):
        # NUL is only legal as a quoted-pair inside a quoted-string (RFC 4475 "intmeth").
        raise SipParseError("Bad Request - NUL in header")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # Headers are UTF-8 (§7.3.1); be tolerant of Latin-1 from old equipment.
        text = head.decode("latin-1")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise SipParseError("Bad Request - bare CR")
    lines = text.split("\n")

    # -- start line
    start = lines[0]
    version_error = False
    msg: SipRequest | SipResponse
    if start[:4].upper() == "SIP/":
        parts = start.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("Bad Request - malformed Status-Line")
        version, code = parts[0], parts[1]
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            if not _VERSION_RE.match(version):
                raise SipParseError("Bad Request - malformed Status-Line")
            version_error = True
        if (
            len(code) != 3
            or not code.isascii()
            or not code.isdigit()
            or not 100 <= int(code) <= 699
        ):
            raise SipParseError("Bad Request - bad Status-Code")
        msg = SipResponse(int(code), parts[2] if len(parts) == 3 else "")
    else:
        parts = start.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            # RFC 4475 "lwsstart", "trws", "lwsruri": exactly one SP between the elements.
            raise SipParseError("Bad Request - malformed Request-Line")
        method, uri, version = parts
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            if not _VERSION_RE.match(version):
                raise SipParseError("Bad Request - malformed Request-Line")
            version_error = True
        if method not in _KNOWN_METHODS and not is_token(method):
            raise SipParseError("Bad Request - bad Method")
        msg = SipRequest(method, uri)

    # -- headers: HCOLON allows whitespace before ":"; a line starting with SP/HT continues
    # the previous one (LWS folding, §7.3.1) and is replaced by a single SP.
    headers = msg.headers
    append = headers.append
    canon_get = _CANON.get
    lengths: list[str] | None = None
    for line in islice(lines, 1, None):
        if not line:
            raise SipParseError("Bad Request - empty header line")
        c = line[0]
        if c == " " or c == "\t":
            if not headers:
                raise SipParseError("Bad Request - continuation line before any header")
            n, v = headers[-1]
            s = line.strip(" \t")
            if s:
                headers[-1] = (n, f"{v} {s}" if v else s)
                if n == "Content-Length":
                    lengths[-1] = headers[-1][1]  # type: ignore[index]
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError("Bad Request - header line without colon")
        canon = canon_get(name)
        if canon is None:
            name = name.rstrip(" \t")
            canon = canon_get(name) or canon_get(name.lower())
            if canon is None:
                if not is_token(name):
                    raise SipParseError("Bad Request - bad header name")
                canon = name
        value = value.strip(" \t")
        append((canon, value))
        if canon == "Content-Length":
            if lengths is None:
                lengths = [value]
            else:
                lengths.append(value)

    # -- checks. Errors from here on carry the partial message so a UAS can still answer.
    try:
        if version_error:
            raise SipParseError("Version Not Supported", 505)
        length = _parse_content_length(lengths) if lengths is not None else None
        names = {n for n, _ in headers}
        missing = _MANDATORY - names
        if missing:
            raise SipParseError(f"Bad Request - missing {', '.join(sorted(missing))}")
        if len(names) < len(headers):
            seen: set[str] = set()
            for n, _ in headers:
                if n in _SINGLE:
                    if n in seen:
                        raise SipParseError(f"Bad Request - multiple {n} headers")
                    seen.add(n)
        call_id = msg.call_id
        if len(call_id.split()) != 1:
            raise SipParseError("Bad Request - bad Call-ID")
        seq_method = msg.cseq[1]
        msg.top_via  # noqa: B018 - parse (and cache) now: transactions need it
        msg.from_addr  # noqa: B018
        msg.to_addr  # noqa: B018
        if isinstance(msg, SipRequest):
            # A bad Contact in a request is answered with 400. In a response it is left for
            # the dialog layer to judge (``contacts`` raises then): dropping a carrier's 200
            # over an odd Contact parameter would fail the whole call.
            if "Contact" in names:
                msg.contacts  # noqa: B018
            if seq_method != msg.method:
                # §8.1.1.5 (RFC 4475 "mismatch01/02"): the CSeq method matches the request.
                raise SipParseError("Bad Request - CSeq method does not match")
            if "Max-Forwards" in names:
                msg.max_forwards  # noqa: B018
            msg.request_uri  # noqa: B018
    except SipParseError as exc:
        exc.partial = msg
        raise
    return msg, length


def parse_message(data: bytes, *, max_size: int = 65535) -> SipRequest | SipResponse:
    """Parse one complete message, as received in a UDP datagram (RFC 3261 §18.3).

    Leading CRLFs are skipped; a datagram of only whitespace (a keepalive) raises
    :class:`SipParseError` with ``status == 0`` ("ignore"). Without Content-Length the body
    is the rest of the datagram; a larger Content-Length than the bytes received is a 400,
    a smaller one truncates the body (extra octets are discarded, RFC 4475 "dblreq").
    """
    if len(data) > max_size:
        raise SipParseError("Message Too Large", 413)
    if data[:1] in (b"\r", b"\n", b" ", b"\t"):
        data = data.lstrip(b"\r\n")
        if not data.strip():
            raise SipParseError("keepalive", 0)
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, rest = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head, rest = data[:end], data[end + 2 :]
        else:
            # No empty line: tolerated on a datagram (it cannot be incomplete).
            head, rest = data.rstrip(b"\r\n"), b""
    msg, length = _parse_head(head)
    if length is None:
        msg.body = rest
    elif length > len(rest):
        # RFC 4475 "clerr".
        raise SipParseError("Bad Request - Content-Length larger than the message", partial=msg)
    else:
        msg.body = rest[:length] if length < len(rest) else rest
    return msg


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> SipResponse:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Copies every Via (in order), From, To, Call-ID and CSeq; adds ``;tag=to_tag`` to To
    when given and the To has no tag yet; copies Timestamp into a 100 (§8.2.6.1).
    Record-Route is the caller's business (§12.1.1: only in dialog-creating responses).
    Content-Length is written by :meth:`SipMessage.serialize`.
    """
    response = SipResponse(status, reason)
    out = response.headers
    for n, v in request.headers:
        if n == "Via" or n == "From" or n == "Call-ID" or n == "CSeq":
            out.append((n, v))
        elif n == "To":
            if to_tag and not _has_tag(request, v):
                v = f"{v};tag={to_tag}"
            out.append((n, v))
        elif n == "Timestamp" and status == 100:
            out.append((n, v))
    if headers:
        for n, v in headers:
            response.add(n, v)
    response.body = body
    return response


def _has_tag(request: SipRequest, to_value: str) -> bool:
    try:
        return request.to_addr.params.get("tag") is not None
    except SipParseError:
        # A partial (malformed) request: best effort on the text.
        return ";tag=" in to_value.replace(" ", "").lower()


# ----------------------------------------------------------------- stream framing


class StreamFramer:
    """Cut a TCP/TLS byte stream into SIP messages by Content-Length (RFC 3261 §18.3).

    ``feed(data)`` returns the messages completed so far and keeps any partial one. CRLFs
    between messages are skipped (RFC 5626 §3.5.1 keepalives); ``pings`` counts the
    double-CRLF pings seen, so the caller can answer each with a single CRLF pong.

    Content-Length is mandatory on streams. A buffered, incomplete message larger than
    ``max_message_size`` raises :class:`SipParseError` 413.

    On a malformed message, ``feed`` raises :class:`SipParseError` with ``messages`` holding
    the messages completed before it in that call, and ``fatal``:

    * ``fatal is False``: the headers were readable and gave a valid Content-Length, so the
      bad message is skipped (``partial`` holds it, to answer 400). Call ``feed(b"")`` to
      continue with the data already buffered.
    * ``fatal is True``: framing is lost; the caller must close the connection. Every later
      ``feed`` raises the same error.
    """

    def __init__(self, *, max_message_size: int = 65535) -> None:
        self.max_message_size = max_message_size
        self.pings = 0
        self._buf = bytearray()
        self._pending: tuple[SipRequest | SipResponse, int] | None = None
        self._discard = 0
        self._crlf_run = 0
        self._error: SipParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[SipRequest | SipResponse]:
        """Add received bytes; return the messages they complete."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[SipRequest | SipResponse] = []
        try:
            while True:
                if self._discard:
                    n = min(self._discard, len(buf))
                    del buf[:n]
                    self._discard -= n
                    if self._discard:
                        break
                if self._pending is None:
                    if not self._skip_keepalives(buf):
                        break
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > self.max_message_size:
                            raise SipParseError("Message Too Large", 413)
                        break
                    if end + 4 > self.max_message_size:
                        raise SipParseError("Message Too Large", 413)
                    head = bytes(buf[:end])
                    del buf[: end + 4]
                    self._crlf_run = 0
                    msg, length = self._parse_head(head)
                    if end + 4 + length > self.max_message_size:
                        raise SipParseError("Message Too Large", 413, partial=msg)
                    self._pending = (msg, length)
                msg, length = self._pending
                if len(buf) < length:
                    break
                msg.body = bytes(buf[:length])
                del buf[:length]
                self._pending = None
                out.append(msg)
        except SipParseError as exc:
            exc.messages = out
            if exc.fatal:
                self._error = exc
            raise
        return out

    def _skip_keepalives(self, buf: bytearray) -> bool:
        """Drop leading CR/LF; return True when message bytes follow."""
        i = 0
        n = len(buf)
        while i < n and buf[i] in (13, 10):
            i += 1
        if i:
            del buf[:i]
            self._crlf_run += i
            while self._crlf_run >= 4:
                self.pings += 1
                self._crlf_run -= 4
        return bool(buf)

    def _parse_head(self, head: bytes) -> tuple[SipRequest | SipResponse, int]:
        try:
            msg, length = _parse_head(head)
        except SipParseError as exc:
            # Keep the connection if the Content-Length still frames the message.
            length = None
            if exc.partial is not None:
                values = exc.partial._lines("Content-Length")
                if values:
                    try:
                        length = _parse_content_length(values)
                    except SipParseError:
                        length = None
            if length is None:
                raise
            exc.fatal = False
            self._discard = length
            raise
        if length is None:
            raise SipParseError("Bad Request - missing Content-Length on a stream", partial=msg)
        return msg, length


# ----------------------------------------------------------------- identifiers


def new_branch() -> str:
    """A fresh Via branch: the RFC 3261 magic cookie ``z9hG4bK`` (§8.1.1.7) and 80 random
    bits, unique across space and time."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    """A From/To tag (§19.3): at least 32 bits of cryptographic randomness."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A Call-ID (§8.1.1.4): 96 random bits ``@host``."""
    return f"{secrets.token_hex(12)}@{host}"
