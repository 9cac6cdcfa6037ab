"""SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for RTP/AVP audio, with
SDES security descriptions for SRTP (RFC 4568, :mod:`media.sdp._crypto`).

Two modules along the RFCs' line: :mod:`media.sdp._description` parses and writes session
descriptions (RFC 4566); :mod:`media.sdp._offer_answer` builds offers and answers and reads
the result of an exchange into :class:`NegotiatedMedia` (RFC 3264):

* we offer (outbound INVITE): :func:`build_offer`, then :func:`negotiate_answer` on the 183/200;
* the far end offers (re-INVITE for hold, resume, codec change): :func:`answer_offer`.

Import the names from here.
"""

from ._crypto import (
    SRTP_POLICIES,
    SUPPORTED_SUITES,
    CryptoAttribute,
    CryptoError,
    KeyParams,
    LocalCrypto,
    SrtpParameters,
    crypto_attributes,
    is_secure_proto,
)
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
    "SRTP_POLICIES",
    "STATIC_PAYLOAD_TYPES",
    "SUPPORTED_SUITES",
    "CryptoAttribute",
    "CryptoError",
    "KeyParams",
    "LocalCrypto",
    "SrtpParameters",
    "crypto_attributes",
    "is_secure_proto",
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
