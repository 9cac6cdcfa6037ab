"""The grammar of a SIP message's framing (RFC 3261 §7, §25.1): start lines, header names,
which headers are lists and which may appear once.

Each pattern and table sits under the ABNF it implements (h11's ``_abnf.py`` habit). The
parser in :mod:`sip._parser` checks most of this grammar with string methods rather than
one regex per line (a message parses in tens of microseconds); the rules it checks that way
are quoted where it checks them. The grammar of header *values* (Via, name-addr, generic
parameters) is in :mod:`sip.headers`, that of URIs in :mod:`sip.uri`, each beside its parser.

Message (RFC 3261 §25.1)::

    SIP-message    =  Request / Response
    Request        =  Request-Line *( message-header ) CRLF [ message-body ]
    Response       =  Status-Line *( message-header ) CRLF [ message-body ]
    message-header =  header-name HCOLON header-value CRLF
    HCOLON         =  *( SP / HTAB ) ":" SWS
    LWS            =  [*WSP CRLF] 1*WSP ; linear whitespace
    SWS            =  [LWS] ; sep whitespace
"""

from __future__ import annotations

import re

__all__ = [
    "SIP_VERSION_RE",
    "KNOWN_METHODS",
    "COMPACT_FORMS",
    "KNOWN_HEADERS",
    "CANON",
    "canonical_name",
    "LIST_HEADERS",
    "SINGLE_HEADERS",
]

# ----------------------------------------------------------------- start line

#   Request-Line   =  Method SP Request-URI SP SIP-Version CRLF
#   Status-Line    =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
#   Status-Code    =  Informational / Redirection / Success / Client-Error
#                     / Server-Error / Global-Failure / extension-code
#   extension-code =  3DIGIT
#   Reason-Phrase  =  *(reserved / unreserved / escaped
#                     / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
#
#   SIP-Version    =  "SIP" "/" 1*DIGIT "." 1*DIGIT
# Matched only when the version is not the literal "SIP/2.0": a well-formed other version
# is answered 505, anything else 400.
SIP_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)

#   Method            =  INVITEm / ACKm / OPTIONSm / BYEm
#                        / CANCELm / REGISTERm
#                        / extension-method
#   extension-method  =  token
# The methods we know (RFC 3261 and its extensions) skip the token check.
KNOWN_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO",
    "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH",
))  # fmt: skip

# ----------------------------------------------------------------- header names

#   header-name    =  token
#   extension-header = header-name HCOLON header-value
#
#   From           =  ( "From" / "f" ) HCOLON from-spec
#   Call-ID        =  ( "Call-ID" / "i" ) HCOLON callid
#   Content-Length =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
#   Via            =  ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
#   ...
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

#: Header names we know, in their canonical spelling (header names compare case-insensitively,
#: §7.3.1).
KNOWN_HEADERS = (
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
CANON: dict[str, str] = {}
for _name in KNOWN_HEADERS:
    CANON[_name] = _name
    CANON[_name.lower()] = _name
for _short, _long in COMPACT_FORMS.items():
    CANON[_short] = _long
    CANON[_short.upper()] = _long
del _name, _short, _long


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name: ``call-id``/``i``/``CALL-ID`` ->
    ``Call-ID``, ``www-authenticate`` -> ``WWW-Authenticate``, ``cseq`` -> ``CSeq``.

    Header names are case-insensitive (RFC 3261 §7.3.1); names we do not know keep the
    spelling they were given (``X-PH-foo`` stays ``X-PH-foo``) and compare case-insensitively.
    """
    canon = CANON.get(name)
    if canon is not None:
        return canon
    return CANON.get(name.lower(), name)


# ----------------------------------------------------------------- header shapes

#   Via            =  ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
#   Route          =  "Route" HCOLON route-param *(COMMA route-param)
#   Contact        =  ("Contact" / "m" ) HCOLON
#                     ( STAR / (contact-param *(COMMA contact-param)))
#   Supported      =  ( "Supported" / "k" ) HCOLON
#                     [option-tag *(COMMA option-tag)]
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

#   To             =  ( "To" / "t" ) HCOLON ( name-addr / addr-spec ) *( SEMI to-param )
#   CSeq           =  "CSeq" HCOLON 1*DIGIT LWS Method
#   Max-Forwards   =  "Max-Forwards" HCOLON 1*DIGIT
# Headers that may appear once only (their grammar has no comma list; RFC 4475 "multi01").
SINGLE_HEADERS = frozenset(("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type"))
