"""SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for plain RTP/AVP audio.

Why our own parser: aiortc's SDP parser is written for WebRTC. It drops static payload
types that come without an ``a=rtpmap`` line (RFC 3551 §6 lets a PBX send ``m=audio 4000
RTP/AVP 0 8`` and nothing else) and it ignores ``a=ptime``. PBXs and phones send exactly
that, so this module parses the lines itself, keeps every attribute it does not understand,
and implements the few offer/answer rules a softswitch needs:

* we offer (outbound INVITE): :func:`build_offer`, then :func:`negotiate_answer` on the 183/200;
* the far end offers (re-INVITE for hold, resume, codec change): :func:`answer_offer`.

Directions are handled per RFC 3264 §6.1 and hold per §8.4, including the old RFC 2543 style
of hold, ``c=IN IP4 0.0.0.0``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = [
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


class SdpError(ValueError):
    """Malformed SDP, or an offer/answer that leaves no usable audio stream."""


# RFC 3551 §6 table 4: static audio payload types. G.722's RTP clock rate is 8000 although it
# samples at 16 kHz (RFC 3551 §4.5.2), so it is listed with 8000 here, as peers write it.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}

# The payload types we use when *we* write an offer. Dynamic numbers are the ones most
# PBXs use (Asterisk and FreeSWITCH both put telephone-event on 101).
_OFFER_CODECS: dict[str, tuple[int, int, int, str | None]] = {
    # name: (payload type, clock rate, channels, fmtp)
    "PCMU": (0, 8000, 1, None),
    "PCMA": (8, 8000, 1, None),
    "G722": (9, 8000, 1, None),
    "G729": (18, 8000, 1, "annexb=no"),
    "CN": (13, 8000, 1, None),
    "OPUS": (111, 48000, 2, "useinbandfec=1"),
}
TELEPHONE_EVENT_PT = 101
# RFC 4733 §7.1.1: the events for DTMF digits 0-9 * # A-D are 0-15; 16 is flash.
TELEPHONE_EVENT_FMTP = "0-16"

_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Direction as (we send, we receive) bits and back.
_BITS = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_FROM_BITS = {bits: name for name, bits in _BITS.items()}

# Names that never carry audio: they ride along with the audio codec.
_AUXILIARY = {"TELEPHONE-EVENT", "CN"}


@dataclass
class Codec:
    """One payload type of an m-line: ``a=rtpmap`` (RFC 4566 §6) or a static type."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def matches(self, other: Codec) -> bool:
        """Same codec irrespective of payload type number (RFC 3264 §6.1 matches by encoding)."""
        return (
            self.name.upper() == other.name.upper()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )


@dataclass
class Origin:
    """The ``o=`` line (RFC 4566 §5.2)."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class MediaDescription:
    """One ``m=`` section. ``connection`` and ``direction`` are the effective values
    (media level, else session level, else the RFC 3264 §5.1 default ``sendrecv``)."""

    media: str
    port: int
    proto: str
    formats: list[int]
    codecs: list[Codec]
    connection: str | None = None
    direction: str = "sendrecv"
    ptime: int | None = None
    rtcp_port: int | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    maxptime: int | None = None
    rtcp_address: str | None = None
    raw_formats: list[str] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    """Media-level ``i=``, ``b=``, ``k=`` lines, kept verbatim."""

    def codec(self, payload_type: int) -> Codec | None:
        """The codec a payload type number stands for in this m-line."""
        for codec in self.codecs:
            if codec.payload_type == payload_type:
                return codec
        return None

    @property
    def telephone_event(self) -> Codec | None:
        """The RFC 4733 telephone-event codec at 8000 Hz, if listed."""
        for codec in self.codecs:
            if codec.name.upper() == "TELEPHONE-EVENT" and codec.clock_rate == 8000:
                return codec
        return None

    @property
    def on_hold_address(self) -> bool:
        """RFC 3264 §8.4 / RFC 2543: ``c=0.0.0.0`` (or ``::``) means "do not send to me"."""
        return self.connection in ("0.0.0.0", "::")

    def __str__(self) -> str:
        fmts = (
            " ".join(self.raw_formats)
            if self.raw_formats
            else " ".join(str(f) for f in self.formats)
        )
        lines = [f"m={self.media} {self.port} {self.proto} {fmts}".rstrip()]
        # RFC 4566 §5 order inside a media section: i=, c=, b=, k=, a=.
        lines += [ln for ln in self.other_lines if ln.startswith("i=")]
        if self.connection is not None:
            lines.append(f"c=IN {_addrtype(self.connection)} {self.connection}")
        lines += [ln for ln in self.other_lines if not ln.startswith("i=")]
        for name, value in self.attributes:
            lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        return "\r\n".join(lines) + "\r\n"


@dataclass
class SessionDescription:
    """A parsed SDP body. Unknown lines are kept (``other_lines``) so ``str()`` round-trips
    what matters."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    direction: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Parse an SDP body (RFC 4566 §5). Accepts CRLF or bare LF line endings
        (RFC 4566 §5: "a parser SHOULD be tolerant and also accept records terminated
        with a single newline character") and ignores blank lines.

        Raises :class:`SdpError` on malformed mandatory lines (``v=``, ``o=``, ``c=``, ``m=``).
        """
        if len(text) > 65536:
            raise SdpError("SDP body too large")
        sdp = cls()
        current: MediaDescription | None = None
        rtpmaps: dict[int, tuple[str, int, int]] = {}
        fmtps: dict[int, str] = {}
        seen_version = False
        for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"line {number}: not a type=value line: {line!r}")
            kind, value = line[0], line[2:]
            try:
                if kind == "v":
                    sdp.version = int(value)
                    seen_version = True
                elif kind == "o":
                    sdp.origin = _parse_origin(value)
                elif kind == "s" and current is None:
                    sdp.session_name = value
                elif kind == "t" and current is None:
                    sdp.timing = value
                elif kind == "c":
                    address = _parse_connection(value)
                    if current is None:
                        sdp.connection = address
                    else:
                        current.connection = address
                elif kind == "m":
                    if current is not None:
                        _finish_media(current, rtpmaps, fmtps)
                    current = _parse_media_line(value)
                    rtpmaps, fmtps = {}, {}
                    sdp.media.append(current)
                elif kind == "a":
                    name, _, attr_value = value.partition(":")
                    attr: tuple[str, str | None] = (name, attr_value if ":" in value else None)
                    if current is None:
                        if name in _DIRECTIONS:
                            sdp.direction = name
                        sdp.attributes.append(attr)
                    else:
                        _media_attribute(current, attr, rtpmaps, fmtps)
                else:
                    # i=, u=, e=, p=, b=, z=, k=, r=: kept verbatim, no effect on audio.
                    if current is None:
                        sdp.other_lines.append(line)
                    else:
                        current.other_lines.append(line)
            except (ValueError, IndexError) as exc:
                if isinstance(exc, SdpError):
                    raise
                raise SdpError(f"line {number}: malformed {kind}= line: {line!r}") from exc
        if current is not None:
            _finish_media(current, rtpmaps, fmtps)
        if not seen_version:
            raise SdpError("missing v= line")
        for media in sdp.media:
            if media.connection is None:
                media.connection = sdp.connection
            if media.direction == "":
                media.direction = sdp.direction or "sendrecv"
        return sdp

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += [ln for ln in self.other_lines if not ln.startswith("b=")]
        if self.connection is not None:
            lines.append(f"c=IN {_addrtype(self.connection)} {self.connection}")
        lines += [ln for ln in self.other_lines if ln.startswith("b=")]
        lines.append(f"t={self.timing}")
        for name, value in self.attributes:
            lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        body = "\r\n".join(lines) + "\r\n"
        for media in self.media:
            text = str(media)
            # Same-as-session connection lines are not repeated.
            if self.connection is not None and media.connection == self.connection:
                text = text.replace(
                    f"c=IN {_addrtype(self.connection)} {self.connection}\r\n", "", 1
                )
            body += text
        return body

    def first_audio(self) -> tuple[int, MediaDescription]:
        """Index and description of the first audio m-line with a non-zero port."""
        for index, media in enumerate(self.media):
            if media.media == "audio" and media.port != 0:
                return index, media
        raise SdpError("no active audio stream in SDP")


@dataclass
class NegotiatedMedia:
    """What the media stream needs after one offer/answer exchange."""

    remote_address: str
    remote_port: int
    codec: Codec
    dtmf_payload_type: int | None
    ptime: int
    direction: str
    """Our direction after negotiation: ``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive``."""
    remote_rtcp_port: int | None = None
    remote_rtcp_address: str | None = None
    receive_codecs: dict[int, Codec] = field(default_factory=dict)
    """Every payload type the far end may send us (RFC 3264 §5.1: any type we listed)."""
    receive_dtmf_payload_types: frozenset[int] = frozenset()
    cn_payload_type: int | None = None
    """13 when both sides listed comfort noise (RFC 3389)."""

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


# --- parsing helpers -------------------------------------------------------------------


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"o= needs 6 fields: {value!r}")
    return Origin(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4], parts[5])


def _parse_connection(value: str) -> str:
    # RFC 4566 §5.7: c=<nettype> <addrtype> <connection-address>; multicast may add /ttl.
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"unsupported c= line: {value!r}")
    address = parts[2].split("/", 1)[0]
    if parts[1] == "IP6":
        ipaddress.IPv6Address(address)  # ValueError -> SdpError by the caller
    return address


def _parse_media_line(value: str) -> MediaDescription:
    # RFC 4566 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m= line too short: {value!r}")
    port = int(parts[1].split("/", 1)[0])
    if not 0 <= port <= 65535:
        raise SdpError(f"m= port out of range: {port}")
    raw = parts[3:]
    formats = [int(f) for f in raw if f.isdigit()] if "RTP/" in parts[2] else []
    return MediaDescription(
        media=parts[0],
        port=port,
        proto=parts[2],
        formats=formats,
        codecs=[],
        direction="",
        raw_formats=raw,
    )


def _media_attribute(
    media: MediaDescription,
    attr: tuple[str, str | None],
    rtpmaps: dict[int, tuple[str, int, int]],
    fmtps: dict[int, str],
) -> None:
    name, value = attr
    media.attributes.append(attr)
    if name in _DIRECTIONS:
        media.direction = name
    elif name == "rtpmap" and value:
        # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
        pt, _, encoding = value.partition(" ")
        enc = encoding.strip().split("/")
        rtpmaps[int(pt)] = (enc[0], int(enc[1]), int(enc[2]) if len(enc) > 2 and enc[2] else 1)
    elif name == "fmtp" and value:
        pt, _, params = value.partition(" ")
        if pt.isdigit():
            fmtps[int(pt)] = params.strip()
    elif name == "ptime" and value:
        media.ptime = int(float(value))
    elif name == "maxptime" and value:
        media.maxptime = int(float(value))
    elif name == "rtcp" and value:
        # RFC 3605: a=rtcp:<port> [IN IP4 <address>]
        parts = value.split()
        media.rtcp_port = int(parts[0])
        if len(parts) == 4:
            media.rtcp_address = parts[3]


def _finish_media(
    media: MediaDescription, rtpmaps: dict[int, tuple[str, int, int]], fmtps: dict[int, str]
) -> None:
    for pt in media.formats:
        if pt in rtpmaps:
            name, rate, channels = rtpmaps[pt]
        elif pt in STATIC_PAYLOAD_TYPES:
            name, rate, channels = STATIC_PAYLOAD_TYPES[pt]
        else:
            continue  # dynamic type without rtpmap: unusable, skipped (RFC 4566 §6)
        media.codecs.append(Codec(pt, name, rate, channels, fmtps.get(pt)))


# --- offer/answer ----------------------------------------------------------------------


def _offer_codec(name: str) -> Codec:
    key = name.upper()
    if key not in _OFFER_CODECS:
        raise ValueError(f"cannot offer codec {name!r}; known: {sorted(_OFFER_CODECS)}")
    pt, rate, channels, fmtp = _OFFER_CODECS[key]
    return Codec(pt, "opus" if key == "OPUS" else key, rate, channels, fmtp)


def _audio_lines(
    address: str, port: int, codecs: list[Codec], ptime: int, direction: str
) -> MediaDescription:
    attributes: list[tuple[str, str | None]] = []
    for codec in codecs:
        rtpmap = f"{codec.payload_type} {codec.name}/{codec.clock_rate}"
        if codec.channels != 1:
            rtpmap += f"/{codec.channels}"
        attributes.append(("rtpmap", rtpmap))
        if codec.fmtp:
            attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    return MediaDescription(
        media="audio",
        port=port,
        proto="RTP/AVP",
        formats=[c.payload_type for c in codecs],
        codecs=codecs,
        connection=address,
        direction=direction,
        ptime=ptime,
        attributes=attributes,
    )


def _session(
    address: str, session_id: int, version: int, media: list[MediaDescription]
) -> SessionDescription:
    return SessionDescription(
        origin=Origin("softswitch", session_id, version, "IN", _addrtype(address), address),
        session_name="softswitch",
        connection=address,
        media=media,
    )


def build_offer(
    *,
    address: str,
    port: int,
    codecs: list[str] | None = None,
    telephone_event: bool = True,
    ptime: int = 20,
    direction: str = "sendrecv",
    session_id: int,
    version: int,
) -> str:
    """Write our SDP offer for an outbound INVITE (RFC 3264 §5).

    ``codecs`` is in preference order; ``"CN"`` may be listed to offer RFC 3389 comfort noise.
    The telephone-event line follows RFC 4733 §7.1.1 (``a=fmtp:101 0-16``).
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    offered = [_offer_codec(name) for name in (codecs or ["PCMU", "PCMA"])]
    if telephone_event:
        offered.append(Codec(TELEPHONE_EVENT_PT, "telephone-event", 8000, 1, TELEPHONE_EVENT_FMTP))
    media = _audio_lines(address, port, offered, ptime, direction)
    return str(_session(address, session_id, version, [media]))


def _as_sdp(value: str | SessionDescription) -> SessionDescription:
    return value if isinstance(value, SessionDescription) else SessionDescription.parse(value)


def _effective_remote_direction(media: MediaDescription) -> str:
    """The far end's direction, with old-style hold (c=0.0.0.0) meaning "don't send to me"."""
    send, recv = _BITS.get(media.direction, (True, True))
    if media.on_hold_address:
        recv = False
    return _FROM_BITS[(send, recv)]


def _our_direction(remote: str, desired: str = "sendrecv") -> str:
    """RFC 3264 §6.1: we may send only if they receive, receive only if they send."""
    r_send, r_recv = _BITS[remote]
    d_send, d_recv = _BITS[desired]
    return _FROM_BITS[(d_send and r_recv, d_recv and r_send)]


def _remote_address(media: MediaDescription) -> str:
    if media.connection is None:
        raise SdpError("no c= line for the audio stream")
    return media.connection


def negotiate_answer(offer_we_sent: str | SessionDescription, answer: str) -> NegotiatedMedia:
    """Read the answer to our offer (RFC 3264 §7): the first codec in the answer that we
    offered is the one we send (with the answer's payload type number, §6.1).

    Raises :class:`SdpError` if the audio stream was rejected (port 0) or nothing matches.
    """
    offer = _as_sdp(offer_we_sent)
    ans = SessionDescription.parse(answer)
    index, ours = offer.first_audio()
    if index >= len(ans.media):
        raise SdpError("answer has fewer m-lines than the offer (RFC 3264 §6)")
    theirs = ans.media[index]
    if theirs.media != "audio" or theirs.port == 0:
        raise SdpError("audio stream rejected in the answer")
    chosen: Codec | None = None
    for codec in theirs.codecs:
        if codec.name.upper() in _AUXILIARY:
            continue
        if any(codec.matches(mine) for mine in ours.codecs):
            chosen = codec
            break
    if chosen is None:
        raise SdpError("no common audio codec in the answer")
    te_send = theirs.telephone_event if ours.telephone_event else None
    receive: dict[int, Codec] = {}
    for mine in ours.codecs:
        if any(mine.matches(c) for c in theirs.codecs):
            receive[mine.payload_type] = mine
    for codec in theirs.codecs:  # tolerate peers that send with the answer's numbers
        receive.setdefault(codec.payload_type, codec)
    dtmf_types = {c.payload_type for c in (ours.telephone_event, theirs.telephone_event) if c}
    cn = (
        13
        if (
            any(c.name.upper() == "CN" for c in ours.codecs)
            and any(c.name.upper() == "CN" for c in theirs.codecs)
        )
        else None
    )
    remote_dir = _effective_remote_direction(theirs)
    return NegotiatedMedia(
        remote_address=_remote_address(theirs),
        remote_port=theirs.port,
        codec=chosen,
        dtmf_payload_type=te_send.payload_type if te_send else None,
        ptime=theirs.ptime or ours.ptime or 20,
        direction=_our_direction(remote_dir, ours.direction),
        remote_rtcp_port=theirs.rtcp_port if theirs.rtcp_port else theirs.port + 1,
        remote_rtcp_address=theirs.rtcp_address,
        receive_codecs=receive,
        receive_dtmf_payload_types=frozenset(dtmf_types) if ours.telephone_event else frozenset(),
        cn_payload_type=cn,
    )


def answer_offer(
    offer: str,
    *,
    address: str,
    port: int,
    supported: list[str] | None = None,
    telephone_event: bool = True,
    ptime: int = 20,
    session_id: int,
    version: int,
    hold: bool = False,
) -> tuple[str, NegotiatedMedia]:
    """Answer an offer from the far end (RFC 3264 §6), typically a re-INVITE.

    The first audio m-line with a codec we support is accepted (the offerer's preference
    order decides, §6.1); every other m-line, video included, is rejected with port 0 and
    its formats echoed (§6: the answer has as many m-lines as the offer). ``hold=True``
    answers ``sendonly`` (or ``inactive``) to put the far end on hold from our side.
    The caller owns ``o=``: same ``session_id``, ``version`` bumped when the body changed
    (RFC 3264 §8).
    """
    sdp = SessionDescription.parse(offer)
    wanted = [_offer_codec(name) for name in (supported or ["PCMU", "PCMA"])]
    answer_media: list[MediaDescription] = []
    negotiated: NegotiatedMedia | None = None
    for media in sdp.media:
        accepted: MediaDescription | None = None
        if (
            negotiated is None
            and media.media == "audio"
            and media.port != 0
            and media.proto.upper().startswith("RTP/AVP")
        ):
            chosen = next(
                (
                    c
                    for c in media.codecs
                    if c.name.upper() not in _AUXILIARY and any(c.matches(w) for w in wanted)
                ),
                None,
            )
            if chosen is not None:
                codecs = [chosen]
                te = media.telephone_event if telephone_event else None
                if te is not None:
                    codecs.append(te)
                cn = next(
                    (c for c in media.codecs if c.name.upper() == "CN" and c.clock_rate == 8000),
                    None,
                )
                if not any(w.name == "CN" for w in wanted):
                    cn = None
                if cn is not None:
                    codecs.append(cn)
                remote_dir = _effective_remote_direction(media)
                ours = _our_direction(remote_dir, "sendonly" if hold else "sendrecv")
                # What we write mirrors the offer (§6.1), not the c=0.0.0.0 interpretation.
                written = _our_direction(media.direction, "sendonly" if hold else "sendrecv")
                accepted = _audio_lines(address, port, codecs, ptime, written)
                accepted.proto = media.proto
                negotiated = NegotiatedMedia(
                    remote_address=_remote_address(media),
                    remote_port=media.port,
                    codec=chosen,
                    dtmf_payload_type=te.payload_type if te else None,
                    ptime=media.ptime or 20,
                    direction=ours,
                    remote_rtcp_port=media.rtcp_port or media.port + 1,
                    remote_rtcp_address=media.rtcp_address,
                    receive_codecs={c.payload_type: c for c in codecs},
                    receive_dtmf_payload_types=frozenset({te.payload_type} if te else ()),
                    cn_payload_type=cn.payload_type if cn is not None else None,
                )
        if accepted is None:
            accepted = MediaDescription(
                media=media.media,
                port=0,
                proto=media.proto,
                formats=media.formats,
                codecs=[],
                connection=None,
                raw_formats=media.raw_formats or ["0"],
            )
        answer_media.append(accepted)
    if negotiated is None:
        raise SdpError("no acceptable audio stream in the offer")
    return str(_session(address, session_id, version, answer_media)), negotiated
