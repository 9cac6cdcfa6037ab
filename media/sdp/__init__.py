"""SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for plain RTP/AVP audio.

Two modules along the RFCs' line: :mod:`media.sdp._description` parses and writes session
descriptions (RFC 4566); :mod:`media.sdp._offer_answer` builds offers and answers and reads
the result of an exchange into :class:`NegotiatedMedia` (RFC 3264):

* we offer (outbound INVITE): :func:`build_offer`, then :func:`negotiate_answer` on the 183/200;
* the far end offers (re-INVITE for hold, resume, codec change): :func:`answer_offer`.

Import the names from here.
"""

from ._description import (
    STATIC_PAYLOAD_TYPES,
    Codec,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
)
from ._offer_answer import (
    TELEPHONE_EVENT_48K_PT,
    TELEPHONE_EVENT_FMTP,
    TELEPHONE_EVENT_PT,
    NegotiatedMedia,
    answer_offer,
    build_offer,
    negotiate_answer,
)

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "TELEPHONE_EVENT_48K_PT",
    "TELEPHONE_EVENT_FMTP",
    "TELEPHONE_EVENT_PT",
    "Codec",
    "MediaDescription",
    "NegotiatedMedia",
    "Origin",
    "SdpError",
    "SessionDescription",
    "answer_offer",
    "build_offer",
    "negotiate_answer",
]
