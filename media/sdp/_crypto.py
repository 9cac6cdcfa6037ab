"""SDP security descriptions for SRTP (SDES, RFC 4568): the ``a=crypto`` attribute and its
offer/answer rules, on parsed SDP.

What we offer and accept: the two RFC 4568 §6.2 suites every SDES peer implements,
``AES_CM_128_HMAC_SHA1_80`` (preferred) and ``AES_CM_128_HMAC_SHA1_32``, one ``inline`` key
each (30 random bytes: 128-bit master key and 112-bit master salt, §6.1), no lifetime
(libsrtp's limit, 2^48 packets, applies) and no MKI. A line we cannot use (another suite, an
MKI, several keys, a session parameter such as ``UNENCRYPTED_SRTP`` or ``KDR``) is skipped
with its reason; when nothing usable is left the reasons are in the :class:`SdpError`.

A stream's SRTP policy (:data:`SRTP_POLICIES`):

* ``off``: plain RTP/AVP; ``a=crypto`` in an offer is ignored, an RTP/SAVP offer refused;
* ``optional``: offer ``RTP/AVP`` with ``a=crypto`` lines (best-effort SDES, as FreeSWITCH
  does and Asterisk, FreeSWITCH and baresip's ``mediaenc=srtp`` accept): SRTP if the answer
  carries a crypto line, plain RTP if not; answer SRTP to any offer with a usable crypto line;
* ``mandatory``: offer ``RTP/SAVP``; an answer (or an offer) without a usable crypto line
  fails with :class:`SdpError` (the call ends with 488 / ``INCOMPATIBLE_DESTINATION``).

Each side sends with its own key and receives with the other's (§6.1); the answer repeats
the chosen offer line's tag and suite with the answerer's key (§7.1.3, §7.1.4).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

from ._description import MediaDescription, SdpError, SessionDescription

#: Per-stream SRTP policies.
SRTP_POLICIES = ("off", "optional", "mandatory")

#: RFC 4568 §6.2 suites we implement, in our order of preference, with the length of their
#: inline key-salt (128-bit key + 112-bit salt).
SUPPORTED_SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
}

# RFC 4568 §9.1:
#   crypto-attribute = "crypto:" tag 1*WSP crypto-suite 1*WSP key-params
#                      *(1*WSP session-param)
#   tag              = 1*9DIGIT
#   crypto-suite     = 1*(ALPHA / DIGIT / "_")
#   key-params       = key-param *(";" key-param)
#   key-param        = key-method ":" key-info
#   key-info         = 1*(%x21-3A / %x3C-7E)      ; visible characters but ";"
_TAG = re.compile(r"[0-9]{1,9}")
_SUITE = re.compile(r"[A-Za-z0-9_]+")
_KEY_PARAM = re.compile(r"([A-Za-z0-9_-]+):([\x21-\x3a\x3c-\x7e]+)")
# RFC 4568 §6.1 (SRTP key-info):
#   srtp-key-info = key-salt ["|" lifetime] ["|" mki]
#   lifetime      = ["2^"] 1*(DIGIT)
#   mki           = mki-value ":" mki-length       ; mki-length 1*3DIGIT, 1-128
_LIFETIME = re.compile(r"(2\^)?([0-9]{1,20})")
_MKI = re.compile(r"([0-9]{1,39}):([0-9]{1,3})")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class CryptoError(SdpError):
    """An ``a=crypto`` line that breaks the RFC 4568 grammar."""


@dataclass(frozen=True)
class KeyParams:
    """One ``inline:`` key-param (RFC 4568 §6.1): master key and salt concatenated, an
    optional lifetime (packets) and an optional MKI (value, length in bytes)."""

    key_salt: bytes
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    method: str = "inline"

    def __str__(self) -> str:
        text = f"{self.method}:{base64.b64encode(self.key_salt).decode('ascii')}"
        if self.lifetime is not None:
            power = self.lifetime.bit_length() - 1
            exact = self.lifetime > 0 and 1 << power == self.lifetime
            text += f"|2^{power}" if exact else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text


def _parse_key_param(text: str) -> KeyParams:
    match = _KEY_PARAM.fullmatch(text)
    if match is None:
        raise CryptoError(f"malformed key-param {text!r} (RFC 4568 §9.1: method:info)")
    method, info = match.groups()
    if method.lower() != "inline":
        # Only "inline" is defined for SRTP (§6.1); keep it and let selection refuse it.
        return KeyParams(b"", method=method)
    fields = info.split("|")
    if len(fields) > 3:
        raise CryptoError(f"key-param {text!r} has more than key|lifetime|mki")
    if not _BASE64.fullmatch(fields[0]):
        raise CryptoError(f"key-salt of {text!r} is not base64")
    try:
        key_salt = base64.b64decode(fields[0] + "=" * (-len(fields[0]) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoError(f"key-salt of {text!r} is not base64") from exc
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for field in fields[1:]:
        if ":" in field:  # the MKI is the only field with a colon
            m = _MKI.fullmatch(field)
            if m is None or mki is not None:
                raise CryptoError(f"malformed MKI {field!r} in {text!r}")
            length = int(m.group(2))
            if not 1 <= length <= 128:
                raise CryptoError(f"MKI length {length} out of range 1-128 in {text!r}")
            mki = (int(m.group(1)), length)
        else:
            m = _LIFETIME.fullmatch(field)
            if m is None or lifetime is not None or mki is not None:
                raise CryptoError(f"malformed lifetime {field!r} in {text!r}")
            exponent_or_value = int(m.group(2))
            if m.group(1):
                if exponent_or_value > 64:
                    raise CryptoError(f"lifetime 2^{exponent_or_value} out of range in {text!r}")
                lifetime = 1 << exponent_or_value
            else:
                lifetime = exponent_or_value
    return KeyParams(key_salt, lifetime, mki)


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line (RFC 4568 §4): tag, crypto-suite, key-params, session-params."""

    tag: int
    suite: str
    keys: tuple[KeyParams, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an ``a=crypto:`` line (what follows the colon).

        Raises :class:`CryptoError` (an :class:`SdpError`) when the grammar is broken."""
        parts = value.split()
        if len(parts) < 3:
            raise CryptoError(f"a=crypto needs tag, suite and key-params: {value!r}")
        tag, suite, key_params, *session = parts
        if not _TAG.fullmatch(tag):
            raise CryptoError(f"a=crypto tag {tag!r} is not 1-9 digits")
        if not _SUITE.fullmatch(suite):
            raise CryptoError(f"a=crypto suite {suite!r} is not a crypto-suite name")
        keys = tuple(_parse_key_param(p) for p in key_params.split(";"))
        return cls(int(tag), suite, keys, tuple(session))

    def __str__(self) -> str:
        text = f"{self.tag} {self.suite} " + ";".join(str(k) for k in self.keys)
        return " ".join([text, *self.session_params])

    def unsupported(self) -> str | None:
        """Why we cannot use this line, or ``None`` when we can."""
        size = SUPPORTED_SUITES.get(self.suite.upper())
        if size is None:
            return f"crypto suite {self.suite} is not supported"
        if len(self.keys) != 1:
            return f"tag {self.tag}: several keys (MKI) are not supported"
        key = self.keys[0]
        if key.method.lower() != "inline":
            return f"tag {self.tag}: key method {key.method!r} is not supported (only inline)"
        if len(key.key_salt) != size:
            return f"tag {self.tag}: {self.suite} needs a {size}-byte key and salt, got {len(key.key_salt)}"
        if key.mki is not None:
            return f"tag {self.tag}: an MKI is not supported"
        for param in self.session_params:
            name = param.split("=", 1)[0].upper()
            if name != "WSH":  # the window size hint is only a hint (§6.3.7)
                return f"tag {self.tag}: session parameter {param} is not supported"
        return None

    @property
    def key_salt(self) -> bytes:
        """The master key and salt of a usable line (see :meth:`unsupported`)."""
        return self.keys[0].key_salt


def crypto_attributes(media: MediaDescription) -> list[CryptoAttribute | str]:
    """The ``a=crypto`` lines of an m-line, in order; a line that does not parse is given
    as the reason string instead."""
    out: list[CryptoAttribute | str] = []
    for name, value in media.attributes:
        if name.lower() != "crypto":
            continue
        try:
            out.append(CryptoAttribute.parse(value or ""))
        except CryptoError as exc:
            out.append(str(exc))
    return out


def is_secure_proto(proto: str) -> bool:
    """RTP/SAVP (RFC 3711) or RTP/SAVPF (RFC 5124)."""
    return proto.upper() in ("RTP/SAVP", "RTP/SAVPF")


@dataclass(frozen=True)
class SrtpParameters:
    """The result of one SDES exchange for a stream: the suite, the tag chosen, the key we
    send with (ours) and the key we receive with (theirs)."""

    suite: str
    tag: int
    send_key: bytes
    receive_key: bytes


class LocalCrypto:
    """A stream's side of SDES: its policy and its own master keys, one per suite, drawn
    once from :mod:`secrets` so that re-offers repeat the same lines (RFC 3264 §8: an
    unchanged body keeps its o= version)."""

    def __init__(self, policy: str) -> None:
        if policy not in SRTP_POLICIES or policy == "off":
            raise ValueError(f"SRTP policy must be optional or mandatory here, not {policy!r}")
        self.policy = policy
        self.keys = {suite: secrets.token_bytes(size) for suite, size in SUPPORTED_SUITES.items()}

    def offer_lines(self) -> list[CryptoAttribute]:
        """Our ``a=crypto`` lines, tags 1, 2, ... in order of preference."""
        return [
            CryptoAttribute(tag, suite, (KeyParams(self.keys[suite]),))
            for tag, suite in enumerate(SUPPORTED_SUITES, 1)
        ]

    # -- we offer

    def secure_offer(self, offer: str) -> str:
        """Our offer with SDES: the first audio m-line gets our crypto lines and, when
        SRTP is mandatory, the RTP/SAVP profile (RFC 4568 §3.1.4)."""
        sdp = SessionDescription.parse(offer)
        _, audio = sdp.first_audio()
        if self.policy == "mandatory":
            audio.proto = "RTP/SAVP"
        _insert_crypto(audio, self.offer_lines())
        return str(sdp)

    def read_answer(
        self, offer: SessionDescription, answer: SessionDescription
    ) -> SrtpParameters | None:
        """The SRTP parameters an answer to our offer sets, or ``None`` for plain RTP.

        Raises :class:`SdpError` when the answer's crypto line does not answer one of ours
        (§7.1.3: same tag, same suite), or when SRTP is mandatory and the answer has none."""
        index, ours = offer.first_audio()
        if index >= len(answer.media):
            raise SdpError("answer has fewer m-lines than the offer (RFC 3264 §6)")
        theirs = answer.media[index]
        lines = crypto_attributes(theirs)
        if not lines:
            if self.policy == "mandatory":
                raise SdpError(
                    "SRTP is mandatory but the answer has no a=crypto line "
                    f"(m= profile {theirs.proto})"
                )
            return None
        first = lines[0]
        if isinstance(first, str):
            raise SdpError(f"the answer's a=crypto line is malformed: {first}")
        offered = {c.tag: c for c in crypto_attributes(ours) if isinstance(c, CryptoAttribute)}
        mine = offered.get(first.tag)
        if mine is None or mine.suite.upper() != first.suite.upper():
            raise SdpError(
                f"the answer's a=crypto tag {first.tag} ({first.suite}) matches no line we "
                "offered (RFC 4568 §7.1.3)"
            )
        reason = first.unsupported()
        if reason is not None:
            raise SdpError(f"the answer's a=crypto line is unusable: {reason}")
        return SrtpParameters(mine.suite.upper(), first.tag, mine.key_salt, first.key_salt)

    # -- the far end offers

    def secure_answer(self, offer: str, answer: str) -> tuple[str, SrtpParameters | None]:
        """Add our crypto line to the answer we wrote to ``offer`` (the accepted m-line is
        the answer's one audio m-line with a port): the first offered line we can use, its
        tag and suite with our key (§7.1.4). Returns the answer and the parameters, or
        ``None`` for plain RTP when the offer has no usable line and SRTP is optional.

        Raises :class:`SdpError` when SRTP is mandatory, or the offer is RTP/SAVP, and no
        offered line is usable."""
        offer_sdp = SessionDescription.parse(offer)
        answer_sdp = SessionDescription.parse(answer)
        index, accepted = answer_sdp.first_audio()
        offered = offer_sdp.media[index]
        reasons: list[str] = []
        chosen: CryptoAttribute | None = None
        for line in crypto_attributes(offered):
            reason = line if isinstance(line, str) else line.unsupported()
            if reason is None and isinstance(line, CryptoAttribute):
                chosen = line
                break
            reasons.append(str(reason))
        if chosen is None:
            if self.policy == "mandatory" or is_secure_proto(offered.proto):
                why = "; ".join(reasons) if reasons else "the offer has no a=crypto line"
                raise SdpError(f"no usable SRTP crypto in the offer ({offered.proto}): {why}")
            return answer, None
        suite = chosen.suite.upper()
        mine = CryptoAttribute(chosen.tag, suite, (KeyParams(self.keys[suite]),))
        _insert_crypto(accepted, [mine])
        return str(answer_sdp), SrtpParameters(suite, chosen.tag, mine.key_salt, chosen.key_salt)


def _insert_crypto(media: MediaDescription, lines: list[CryptoAttribute]) -> None:
    """Put ``a=crypto`` lines before the direction attribute (after rtpmap/fmtp/ptime)."""
    attrs = [(n, v) for n, v in media.attributes if n.lower() != "crypto"]
    crypto: list[tuple[str, str | None]] = [("crypto", str(c)) for c in lines]
    directions = ("sendrecv", "sendonly", "recvonly", "inactive")
    at = next((i for i, (n, _) in enumerate(attrs) if n in directions), len(attrs))
    media.attributes = attrs[:at] + crypto + attrs[at:]
