"""SIP message objects (RFC 3261 §7): :class:`SipRequest`, :class:`SipResponse`, their header
access, typed views and serialization, and :class:`SipParseError`.

A message is a start line, an ordered list of ``(name, value)`` header pairs and a body.
Header names are canonicalised on the way in (:func:`sip._abnf.canonical_name`), values are
kept as text. Typed views (:class:`~sip.headers.Via`, :class:`~sip.headers.NameAddr`, CSeq)
are parsed on demand and cached against the raw value they came from, so changing a header
through :meth:`SipMessage.set` (or even by editing ``headers`` directly) never returns a
stale view.

Import these names from :mod:`sip.message`; this module is where they live.
"""

from __future__ import annotations

from sip._abnf import CANON, KNOWN_METHODS, LIST_HEADERS, canonical_name
from sip.headers import CSeq, HeaderError, NameAddr, Via, is_token, split_list
from sip.uri import SipUri, TelUri, UriError, parse_uri

__all__ = [
    "SipParseError",
    "REASON_PHRASES",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "default_reason",
    "is_request",
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
        #: Messages a :class:`~sip.message.StreamFramer` completed in the same ``feed`` call before
        #: this error; the caller should still process them.
        self.messages: list[SipRequest | SipResponse] = []
        #: Set by :class:`~sip.message.StreamFramer`: True when framing is lost and the connection must
        #: be closed; False when the bad message was skipped and feeding may continue.
        self.fatal = True


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


#: The canonical names of the headers we know: all tokens, so they skip the token check.
_KNOWN_NAMES = frozenset(CANON.values())


def _check_header(name: str, value: str) -> None:
    """Refuse names that are not tokens and values that would break the framing (header
    injection through application-supplied values such as X- headers)."""
    if name not in _KNOWN_NAMES and not is_token(name):
        raise ValueError(f"header name is not a token: {name!r}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"CR, LF or NUL in the value of {name}")


def check_values(headers: list[tuple[str, str]]) -> None:
    """:func:`_check_header` for header lines whose names are known canonical ones (the
    requests we build from templates): only the values can be wrong."""
    for name, value in headers:
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
        canon = CANON.get(name) or CANON.get(name.lower())
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
        canon = CANON.get(name) or CANON.get(name.lower())
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
        # ``name`` is canonical (the typed views' own names): no CANON lookup, just the scan.
        for n, v in self.headers:
            if n == name:
                return v
        raise SipParseError(f"Bad Request - missing {name}")

    @property
    def call_id(self) -> str:
        """The Call-ID (§20.8); raises :class:`SipParseError` when missing."""
        return self._required("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` from CSeq (§20.16)."""
        # Read many times per transaction: the tuple itself is what is cached.
        return self._view("CSeq", self._required("CSeq"), _parse_cseq)  # type: ignore[return-value]

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
        headers = self.headers
        # Joined from the header lines in one pass; a message that already has a
        # Content-Length line (or smuggles a line break) takes the general writer below,
        # which gives the same bytes or the same error (a property test compares the two).
        if not headers:
            return self._serialize_generic()
        head = self._start_line() + "\r\n" + "\r\n".join([f"{n}: {v}" for n, v in headers])
        if "\nContent-Length: " in head:
            return self._serialize_generic()
        text = f"{head}\r\nContent-Length: {len(body)}\r\n\r\n"
        lines = len(headers) + 3
        if text.count("\r") != lines or text.count("\n") != lines:
            raise ValueError("CR or LF inside a header name or value")
        return text.encode("utf-8") + body

    def _serialize_generic(self) -> bytes:
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


def _parse_cseq(raw: str) -> tuple[int, str]:
    # Read for every message: the common shape (a number below 2**31 and a method we know)
    # without building a CSeq; anything else through CSeq.parse, which accepts the same and
    # raises the errors (tests/unit/test_sip_message.py compares the two).
    parts = raw.split()
    if len(parts) == 2:
        number, method = parts
        if method in KNOWN_METHODS and number.isascii() and number.isdigit() and len(number) <= 10:
            seq = int(number)
            if seq < 2**31:
                return seq, method
    c = CSeq.parse(raw)
    return c.seq, c.method


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
