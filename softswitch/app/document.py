"""A call-application document read safely: bounded, without DTDs, depth-checked.

The document comes from the user's web server, so it is untrusted input, whatever vocabulary
it is written in:

* size-bounded (``max_bytes``, default 100 KiB) before anything is parsed;
* no DTD at all: any ``<!DOCTYPE`` or ``<!ENTITY`` declaration is refused before the text
  reaches expat, so there is no entity expansion (billion laughs, external entities);
* depth-bounded (``max_depth``) while parsing, with an incremental pull parser so a deeply
  nested document is refused early and nothing recurses over it;
* the root element must be the one the vocabulary names.

:func:`read_document` gives the root element; a vocabulary's parser turns it into verbs and
raises :class:`XmlAppError` (also raised here, and by the executor) naming the element and
attribute at fault.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from typing import Any

__all__ = [
    "CAUSE_FETCH_FAILED",
    "CAUSE_INVALID_XML",
    "CAUSE_NOT_IMPLEMENTED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "XmlAppError",
    "read_document",
]

#: Default bound on the size of one XML document (bytes of the HTTP body).
DEFAULT_MAX_BYTES = 100 * 1024
#: Default bound on element nesting. The deepest legal nesting of the vocabularies we run
#: is 4 (Response > PreAnswer > GetDigits > Speak) plus SSML inside Speak.
DEFAULT_MAX_DEPTH = 16

#: Hangup causes (Q.850-derived names, as in the call record) for XML failures.
#: RFC 3398 / Q.850 cause 95 "invalid message, unspecified": the document is not valid in
#: its vocabulary.
CAUSE_INVALID_XML = "INVALID_MSG_UNSPECIFIED"
#: Q.850 cause 41 "temporary failure": the XML could not be fetched.
CAUSE_FETCH_FAILED = "NORMAL_TEMPORARY_FAILURE"
#: Q.850 cause 79 "service or option not implemented": a valid document we do not run.
CAUSE_NOT_IMPLEMENTED = "SERVICE_NOT_IMPLEMENTED"


class XmlAppError(Exception):
    """The XML application cannot go on: bad document, failed fetch, unsupported verb.

    ``reason`` is a sentence meant for the call record and the user; ``element`` and
    ``attribute`` name the offending place; ``cause`` is the hangup cause the executor uses.
    """

    def __init__(
        self,
        reason: str,
        *,
        element: str | None = None,
        attribute: str | None = None,
        cause: str = CAUSE_INVALID_XML,
    ) -> None:
        where = ""
        if element is not None:
            where = f"<{element}>"
            if attribute is not None:
                where += f" attribute '{attribute}'"
            where += ": "
        super().__init__(where + reason)
        self.reason = reason
        self.element = element
        self.attribute = attribute
        self.cause = cause


# --- the document ---------------------------------------------------------------------

_DECL_RE = re.compile(r"^\s*<\?xml\b[^>]*\?>", re.IGNORECASE)
_ENCODING_RE = re.compile(rb"""^\s*<\?xml\b[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_FORBIDDEN_RE = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)", re.IGNORECASE)
_ALLOWED_ENCODINGS = {
    "utf-8",
    "ascii",
    "latin-1",
    "iso8859-1",
    "cp1252",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
}


def _decode(data: bytes) -> str:
    """Bytes to text: BOM first, then the XML declaration's encoding, else UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        name = "utf-8"
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        name = "utf-16"
    else:
        m = _ENCODING_RE.match(data)
        name = m.group(1).decode("ascii") if m else "utf-8"
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise XmlAppError(f"unknown document encoding {name!r}") from None
    if canonical not in _ALLOWED_ENCODINGS:
        raise XmlAppError(f"document encoding {name!r} is not supported (use UTF-8)")
    try:
        return data.decode(canonical)
    except UnicodeDecodeError as exc:
        raise XmlAppError(f"document is not valid {name}: {exc.reason}") from None


def read_document(
    document: str | bytes,
    *,
    root_tag: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> ET.Element:
    """Decode and parse one document; return its root element, which must be ``root_tag``.

    Raises :class:`XmlAppError` for a document too big, empty, badly encoded, carrying a DTD,
    nested deeper than ``max_depth``, not well-formed, or with another root element.
    """
    size = len(document) if isinstance(document, bytes) else len(document.encode("utf-8"))
    if size > max_bytes:
        raise XmlAppError(f"document is {size} bytes, more than the {max_bytes} allowed")
    text = _decode(document) if isinstance(document, bytes) else document
    if not text.strip():
        raise XmlAppError(f"document is empty, expected <{root_tag}>")
    if _FORBIDDEN_RE.search(text):
        raise XmlAppError("DTD declarations (<!DOCTYPE>, <!ENTITY>) are not allowed")
    # The declaration is dropped: the text is already decoded, and expat must not be told
    # to re-decode it with another encoding.
    text = _DECL_RE.sub("", text, count=1)

    root = _parse_tree(text, max_depth, root_tag)
    if root.tag != root_tag:
        raise XmlAppError(f"root element must be <{root_tag}>, got <{root.tag}>")
    return root


def _parse_tree(text: str, max_depth: int, root_tag: str) -> ET.Element:
    parser: Any = ET.XMLPullParser(events=("start", "end"))
    depth = 0
    root: ET.Element | None = None
    try:
        parser.feed(text)
        for event, elem in parser.read_events():
            if event == "start":
                depth += 1
                if depth > max_depth:
                    raise XmlAppError(f"elements nested deeper than {max_depth} levels")
                if root is None:
                    root = elem
            else:
                depth -= 1
        parser.close()
        for _event, _elem in parser.read_events():
            pass
    except ET.ParseError as exc:
        raise XmlAppError(f"not well-formed XML: {exc}") from None
    if root is None:
        raise XmlAppError(f"document has no root element, expected <{root_tag}>")
    return root
